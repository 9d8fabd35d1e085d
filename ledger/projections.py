"""LMDB views folded from the ledger's events, never written any other way.

* The pointer view: capture id -> where the pcap is, its size and sha256, and its
  state (capturing, local, failed, evicted, offloaded, remote-deleted).
* The batch view: archive batch id -> the session and the objects it put in the
  cold store, and what has since been deleted locally or remotely.

``Projector.catch_up()`` applies the events written since its position;
``rebuild()`` drops everything and replays the whole history. Both run the same
fold in the same order, so they produce the same bytes. The position
(session, seq, chain) is stored in the same LMDB transaction as the view changes
it covers; before applying more, ``catch_up`` checks that the ledger still has
that chain value at that position, and rebuilds (saying why) if it does not: a
view of a history that changed is never served.

Hot-tier sessions are read from ``<root>/<namespace>``. Sessions already archived
and deleted locally can be supplied by an ``archived_sessions`` callable (the cold
tier), so a rebuild still covers the whole history.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lmdb
import msgspec

from . import events as ev
from .errors import InputError
from .format import decode_opened
from .reader import StoredEvent, decode_line, iter_lines, session_paths

log = logging.getLogger("ledger.projections")

VIEWS_DIR = ".views"
COMMIT_EVERY = 20_000
CaptureState = Literal["capturing", "local", "failed", "evicted", "offloaded", "remote-deleted"]


class CaptureView(msgspec.Struct, kw_only=True):
    capture_id: str
    cn: str = ""
    ip: str = ""
    reason: str = ""
    anomaly_id: str | None = None
    path: str = ""
    bytes: int = 0
    sha256: str = ""
    started_at: str = ""
    duration_ms: int = 0
    state: CaptureState = "capturing"
    local: bool = False  # the pcap is (supposed to be) on local disk
    remote_key: str | None = None
    store: str | None = None
    cause: str | None = None
    session: str = ""  # where the capture.started event is
    seq: int = 0


class BatchView(msgspec.Struct, kw_only=True):
    batch_id: str
    session: str
    store: str
    first_seq: int
    last_seq: int
    events: int
    root: str
    chain: str
    sealed_at: str
    manifest_key: str
    manifest_sha256: str
    objects: list[ev.StoredObject]
    state: Literal["archived", "remote-deleted", "partly-deleted"] = "archived"
    local_deleted: bool = False
    kept: list[str] = []
    recorded_in: str = ""  # session that holds the archive.batch event
    restored_at: str | None = None  # written back to the hot tier at this time


class Position(msgspec.Struct):
    session: str
    seq: int
    chain: str
    sealed: bool


@dataclass
class ApplyResult:
    applied: int
    rebuilt: bool
    reason: str | None
    position: Position | None
    # A rebuild's sources: sessions folded from the cold tier ("archived") and from the hot tier ("local").
    folded: dict[str, int] = field(default_factory=dict)


class HistoryNotVisible(InputError):
    """A rebuild would drop history it cannot see (sessions archived and deleted locally,
    with no cold tier to read them from): refused, the views are left as they were."""


_enc = msgspec.json.Encoder()
_cap_dec = msgspec.json.Decoder(CaptureView)
_batch_dec = msgspec.json.Decoder(BatchView)
_pos_dec = msgspec.json.Decoder(Position)


class _Txn:
    """The view databases inside one LMDB write transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, object]) -> None:
        self.txn = txn
        self.dbs = dbs

    def get_capture(self, cid: str) -> CaptureView:
        raw = self.txn.get(cid.encode(), db=self.dbs["captures"])
        return _cap_dec.decode(raw) if raw else CaptureView(capture_id=cid)

    def put_capture(self, view: CaptureView) -> None:
        self.txn.put(view.capture_id.encode(), _enc.encode(view), db=self.dbs["captures"])

    def get_batch(self, bid: str) -> BatchView | None:
        raw = self.txn.get(bid.encode(), db=self.dbs["batches"])
        return _batch_dec.decode(raw) if raw else None

    def put_batch(self, view: BatchView) -> None:
        self.txn.put(view.batch_id.encode(), _enc.encode(view), db=self.dbs["batches"])
        self.txn.put(view.session.encode(), view.batch_id.encode(), db=self.dbs["sessions"])


# ---- the fold: one small function per kind -------------------------------------------


def _capture_started(t: _Txn, d: ev.CaptureStarted, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.cn, v.ip, v.reason, v.anomaly_id, v.path = d.cn, d.ip, d.reason, d.anomaly_id, d.path
    v.session, v.seq, v.state = session, seq, "capturing"
    t.put_capture(v)


def _capture_sealed(t: _Txn, d: ev.CaptureSealed, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.cn, v.ip, v.reason, v.anomaly_id, v.path = d.cn, d.ip, d.reason, d.anomaly_id, d.path
    v.bytes, v.sha256, v.started_at, v.duration_ms = d.bytes, d.sha256, d.started_at, d.duration_ms
    v.local = True
    if v.state in ("capturing", "failed"):
        v.state = "local"
    if not v.session:
        v.session, v.seq = session, seq
    t.put_capture(v)


def _capture_failed(t: _Txn, d: ev.CaptureFailed, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.cn, v.ip, v.reason, v.anomaly_id = d.cn, d.ip, d.reason, d.anomaly_id
    v.state, v.cause, v.local = "failed", d.cause, False
    if not v.session:
        v.session, v.seq = session, seq
    t.put_capture(v)


def _capture_evicted(t: _Txn, d: ev.CaptureEvicted, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.local = False
    if v.state != "offloaded" and v.state != "remote-deleted":
        v.state = "evicted"
    t.put_capture(v)


def _capture_offloaded(t: _Txn, d: ev.CaptureOffloaded, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.state, v.remote_key, v.store = "offloaded", d.key, d.store
    t.put_capture(v)


def _archive_batch(t: _Txn, d: ev.ArchiveBatch, session: str, seq: int) -> None:
    fields = {f: getattr(d, f) for f in d.__struct_fields__}
    t.put_batch(BatchView(**fields, recorded_in=session))


def _archive_local_deleted(t: _Txn, d: ev.ArchiveLocalDeleted, session: str, seq: int) -> None:
    b = t.get_batch(d.batch_id)
    if b is not None:
        b.local_deleted = True
        t.put_batch(b)


def _archive_restored(t: _Txn, d: ev.ArchiveRestored, session: str, seq: int) -> None:
    b = t.get_batch(d.batch_id)
    if b is not None:
        b.local_deleted = False
        b.restored_at = d.restored_at
        t.put_batch(b)


def _remote_deleted(t: _Txn, d: ev.RemoteDeleted, session: str, seq: int) -> None:
    kept = {k["key"] for k in d.kept}
    for bid in d.batch_ids:
        b = t.get_batch(bid)
        if b is None:
            continue
        b.kept = sorted(kept & {o.key for o in b.objects} | kept & {b.manifest_key})
        b.state = "partly-deleted" if b.kept else "remote-deleted"
        t.put_batch(b)
    for cid in d.capture_ids:
        v = t.get_capture(cid)
        if v.remote_key and v.remote_key not in kept:
            v.state = "remote-deleted"
            t.put_capture(v)


def _opened_prev(path: Path) -> str | None:
    """The session a session's first line names as its predecessor, or None."""
    with open(path, "rb") as f:
        first = f.readline().rstrip(b"\n")
    try:
        prev = decode_opened(bytes(decode_line(first).data)).prev
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return prev.session if prev is not None else None


_FOLD: dict[str, Callable] = {
    "capture.started": _capture_started,
    "capture.sealed": _capture_sealed,
    "capture.failed": _capture_failed,
    "capture.evicted": _capture_evicted,
    "capture.offloaded": _capture_offloaded,
    "archive.batch": _archive_batch,
    "archive.local_deleted": _archive_local_deleted,
    "archive.restored": _archive_restored,
    "remote.deleted": _remote_deleted,
}


# ---- the projector -------------------------------------------------------------------


class Projector:
    """The views of one namespace, kept in ``<root>/<namespace>/.views`` (LMDB)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        namespace: str,
        *,
        archived_sessions: Callable[[], Iterable[tuple[str, Iterator[bytes]]]] | None = None,
        map_size: int = 1 << 30,
    ) -> None:
        self.dir = Path(root) / namespace
        if not self.dir.is_dir():
            raise InputError(f"{self.dir}: no such namespace directory")
        self.archived_sessions = archived_sessions
        path = self.dir / VIEWS_DIR
        path.mkdir(mode=0o700, exist_ok=True)
        self.env = lmdb.open(str(path), max_dbs=8, map_size=map_size, subdir=True, mode=0o600)
        self.dbs = {name: self.env.open_db(name.encode()) for name in ("captures", "batches", "sessions", "meta")}

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- reading ----------------------------------------------------------------------

    def position(self) -> Position | None:
        with self.env.begin() as txn:
            raw = txn.get(b"position", db=self.dbs["meta"])
        return _pos_dec.decode(raw) if raw else None

    def captures(self) -> list[CaptureView]:
        with self.env.begin() as txn:
            return [_cap_dec.decode(v) for _, v in txn.cursor(db=self.dbs["captures"])]

    def capture(self, capture_id: str) -> CaptureView | None:
        with self.env.begin() as txn:
            raw = txn.get(capture_id.encode(), db=self.dbs["captures"])
        return _cap_dec.decode(raw) if raw else None

    def batches(self) -> list[BatchView]:
        with self.env.begin() as txn:
            return [_batch_dec.decode(v) for _, v in txn.cursor(db=self.dbs["batches"])]

    def batch_for_session(self, session: str) -> BatchView | None:
        with self.env.begin() as txn:
            bid = txn.get(session.encode(), db=self.dbs["sessions"])
            raw = txn.get(bid, db=self.dbs["batches"]) if bid else None
        return _batch_dec.decode(raw) if raw else None

    def dump(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """Every key and value of every view, for byte-for-byte comparisons."""
        with self.env.begin() as txn:
            return {name: list(txn.cursor(db=db)) for name, db in self.dbs.items()}

    # ---- applying ---------------------------------------------------------------------

    def catch_up(self) -> ApplyResult:
        """Apply events written since the stored position (rebuild if history changed)."""
        pos = self.position()
        if pos is None:
            return self.rebuild()
        problem = self._check_position(pos)
        if problem:
            log.warning("projection of %s: %s; rebuilding", self.dir.name, problem)
            return self.rebuild(reason=problem)
        later = [p for p in session_paths(self.dir) if p.stem > pos.session]
        current = self.dir / f"{pos.session}.ndjson"
        sources: list[tuple[str, Iterator[tuple[int, bytes]]]] = []
        if current.exists() and not pos.sealed:
            sources.append((pos.session, iter_lines(current, pos.seq + 1)))
        sources += [(p.stem, iter_lines(p)) for p in later]
        applied = self._apply(sources, pos)
        return ApplyResult(applied, False, None, self.position())

    def rebuild(self, reason: str | None = None, *, allow_loss: bool = False) -> ApplyResult:
        """Drop every view and replay the whole history.

        Refuses (HistoryNotVisible, nothing dropped) when that history is not all
        visible: a batch of the current view whose session was deleted locally after
        archival and is in neither tier, or, without a cold tier, a hot tier whose
        oldest session links to one that is not here. A view rebuilt from the hot tier
        alone would forget archived batches, and remote retention would then orphan
        their objects for good. ``allow_loss`` rebuilds anyway (the operator knows the
        cold tier is gone).
        """
        local = session_paths(self.dir)
        local_names = {p.stem for p in local}
        archived: list[tuple[str, Iterator[bytes]]] = []
        if self.archived_sessions is not None:
            archived = list(self.archived_sessions())  # names now; each session's lines stream later
        if not allow_loss:
            self._check_visible(local, {name for name, _ in archived} | local_names)
        with self.env.begin(write=True) as txn:
            for db in self.dbs.values():
                txn.drop(db, delete=False)
        sources: list[tuple[str, Iterator[tuple[int, bytes]]]] = []
        for name, lines in archived:
            if name not in local_names and (not local or name < local[-1].stem):
                sources.append((name, enumerate(lines)))
        folded = {"archived": len(sources), "local": len(local)}
        sources += [(p.stem, iter_lines(p)) for p in local]
        sources.sort(key=lambda s: s[0])
        applied = self._apply(sources, None)
        return ApplyResult(applied, True, reason, self.position(), folded)

    def _check_visible(self, local: list[Path], visible: set[str]) -> None:
        # Sessions the view says were archived and then deleted here: only a cold tier has them.
        lost = sorted(
            b.session
            for b in self.batches()
            if b.local_deleted and b.state != "remote-deleted" and b.session not in visible
        )
        where = "the cold tier given" if self.archived_sessions is not None else "the hot tier alone"
        if lost:
            raise HistoryNotVisible(
                f"{self.dir}: rebuilding from {where} would drop {len(lost)} archived batch(es) "
                f"({lost[0]}{' ...' if len(lost) > 1 else ''}); give the store they were archived to "
                "(--store, LEDGER_STORE or [cold] store in the config)"
            )
        if self.archived_sessions is None and local:
            prev = _opened_prev(local[0])
            if prev is not None and prev not in visible:
                raise HistoryNotVisible(
                    f"{self.dir}: the oldest local session {local[0].stem} follows {prev}, which is not here "
                    "(archived?): rebuilding from the hot tier alone would drop its batches; give the store "
                    "(--store, LEDGER_STORE or [cold] store in the config)"
                )

    def _check_position(self, pos: Position) -> str | None:
        path = self.dir / f"{pos.session}.ndjson"
        if not path.exists():
            if pos.sealed:
                return None  # archived and deleted after it was fully applied
            return f"session {pos.session} is gone before it was fully applied"
        for index, line in iter_lines(path, pos.seq):
            if index == pos.seq:
                try:
                    chain = decode_line(line).chain
                except msgspec.DecodeError:
                    return f"line {pos.seq + 1} of {pos.session} no longer parses"
                if chain != pos.chain:
                    return f"{pos.session} seq {pos.seq} no longer has chain {pos.chain[:16]}.. (history changed)"
                return None
        return f"{pos.session} no longer reaches seq {pos.seq} (truncated)"

    def _apply(self, sources, pos: Position | None) -> int:
        applied = 0
        txn = self.env.begin(write=True)
        t = _Txn(txn, self.dbs)
        try:
            for session, lines in sources:
                last: StoredEvent | None = None
                for _, line in lines:
                    e = decode_line(line)
                    fold = _FOLD.get(e.kind)
                    if fold is not None:
                        fold(t, ev.decode(e.kind, e.data), session, e.seq)
                    last = e
                    applied += 1
                    if applied % COMMIT_EVERY == 0:
                        self._save_position(t, session, last)
                        txn.commit()
                        txn = self.env.begin(write=True)
                        t = _Txn(txn, self.dbs)
                if last is not None:
                    self._save_position(t, session, last)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return applied

    def _save_position(self, t: _Txn, session: str, e: StoredEvent) -> None:
        pos = Position(session=session, seq=e.seq, chain=e.chain, sealed=e.kind == "session.sealed")
        t.txn.put(b"position", _enc.encode(pos), db=self.dbs["meta"])
