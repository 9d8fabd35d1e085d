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

The position only pins the session being written. For every session folded through
its seal the view also keeps its summary (size, root, chain: what the next session's
``prev`` names), recomputed from the file's bytes by the verifier's keyless checks,
never copied from the file's own fields, with the file's size, mtime, ctime and inode
from before it was read. ``catch_up`` verifies again only the present sessions whose
identity changed (otherwise a stat each). A summary that no longer matches means a
sealed session was rewritten after it was folded (perhaps re-signed by someone who
holds the key): the views are rebuilt from the files, and the rewrite is named in
``ApplyResult.changed`` by every catch-up until an explicit ``rebuild()``, which
keeps the summaries, compares each with what it folds and reports the same. A
session that is absent (archived, then deleted locally) is not a change. The LMDB
files sit on the same disk as the sessions, so this is a tripwire for the operator,
not a witness: ``ledger verify`` (the next session's ``prev``, checkpoints shipped
off the box) decides which bytes are genuine.

Hot-tier sessions are read from ``<root>/<namespace>``. Sessions already archived
and deleted locally can be supplied by an ``archived_sessions`` callable (the cold
tier), so a rebuild still covers the whole history.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lmdb
import msgspec

from . import events as ev
from . import layout
from .errors import InputError
from .format import TRAILER_LEN, ZERO_CHAIN, decode_opened
from .merkle import Accumulator
from .reader import StoredEvent, decode_line, iter_lines, session_paths
from .verify import Policy, verify_file
from .viewcheck import open_views

log = logging.getLogger("ledger.projections")

VIEWS_DIR = layout.VIEWS_DIR
# Bumped when the stored layout changes; a view without it is rebuilt once.
VIEW_FORMAT = b"2"
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


class Folded(msgspec.Struct):
    """A session folded through its seal: its summary (what the next session's ``prev``
    names) as a keyless verification of its bytes gave it, what that verification
    found wrong if anything, and the identity of its file before it was read (all
    zero when it came from the cold store): an unchanged identity lets catch-up skip
    verifying it again."""

    size: int
    root: str
    chain: str
    problem: str = ""
    file_bytes: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    ino: int = 0


@dataclass
class ApplyResult:
    applied: int
    rebuilt: bool
    reason: str | None
    position: Position | None
    # One line per folded session whose bytes now give another summary.
    changed: list[str] = field(default_factory=list)
    # A rebuild's sources: sessions folded from the cold tier ("archived") and from the hot tier ("local").
    folded: dict[str, int] = field(default_factory=dict)


class HistoryNotVisible(InputError):
    """A rebuild would drop history it cannot see (sessions archived and deleted locally,
    with no cold tier to read them from): refused, the views are left as they were."""


_enc = msgspec.json.Encoder()
_cap_dec = msgspec.json.Decoder(CaptureView)
_batch_dec = msgspec.json.Decoder(BatchView)
_pos_dec = msgspec.json.Decoder(Position)
_folded_dec = msgspec.json.Decoder(Folded)
_changed_dec = msgspec.json.Decoder(list[str])
_sha256 = hashlib.sha256
Identity = tuple[int, int, int, int]
NO_FILE: Identity = (0, 0, 0, 0)


@dataclass
class _Changes:
    """Rewrites of folded sessions: those recorded before this pass and those it finds.
    With ``keep``, each found is recorded in the transaction that folds the new bytes,
    so views rebuilt from rewritten bytes never exist without the record of it."""

    recorded: list[str]
    keep: bool
    found: list[str] = field(default_factory=list)
    sealed: set[str] = field(default_factory=set)  # sessions folded through their seal

    @property
    def all(self) -> list[str]:
        return self.recorded + self.found

    def add(self, t: _Txn, line: str) -> None:
        self.found.append(line)
        if self.keep:
            t.txn.put(b"changed", _enc.encode(self.all), db=t.dbs["meta"])


def _identity(path: Path) -> Identity:
    """What changes when a file is rewritten: size, mtime, and ctime and inode, which
    an editor restoring the mtime (touch -r) cannot set back."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def summarize(path: Path, ident: Identity) -> Folded:
    """The summary of a session file, from its bytes: the keyless checks of SPEC
    section 5 (the C helper's speed; one process, no workers forked beside LMDB)."""
    r = verify_file(path, Policy(jobs=1))
    e = r.first_error
    problem = "" if e is None else f"{e.reason} at line {e.line}" if e.line else e.reason
    return Folded(r.events, r.root, r.chain, problem, *ident)


class _Summary:
    """Size, root and chain of lines streamed from the cold store, computed from their
    bytes (SPEC 2.3); local files are summarized by ``summarize`` instead."""

    __slots__ = ("tree", "chain")

    def __init__(self) -> None:
        self.tree = Accumulator()
        self.chain = ZERO_CHAIN

    def add(self, line: bytes) -> None:
        """Line i without its LF: E_i is the line minus the chain member, plus the brace."""
        leaf = _sha256(b"\x00" + line[:-TRAILER_LEN] + b"}").digest()
        self.chain = _sha256(self.chain + leaf).digest()
        self.tree.append(leaf)

    def folded(self) -> Folded:
        return Folded(self.tree.size, self.tree.root().hex(), self.chain.hex())


def _same_summary(a: Folded, b: Folded) -> bool:
    return (a.size, a.root, a.chain, a.problem) == (b.size, b.root, b.chain, b.problem)


def _compare(name: str, old: Folded, new: Folded) -> str | None:
    """One line when session ``name``, folded through its seal before, now differs."""
    if not _same_summary(old, new):
        now = f"{new.size} lines, root {new.root[:16]}.." + (f" ({new.problem})" if new.problem else "")
        return f"session {name} changed after it was folded: {old.size} lines, root {old.root[:16]}.. then, {now} now"
    return None


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


# (session, its (index, line) pairs, its file or None (from the cold store), the file's
# identity taken before any of it was read)
_Source = tuple[str, Iterator[tuple[int, bytes]], Path | None, Identity]


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
        self.dir = layout.namespace_dir(root, namespace)
        if not self.dir.is_dir():
            raise InputError(f"{self.dir}: no such namespace directory")
        self.archived_sessions = archived_sessions
        path = layout.views_dir(self.dir)
        path.mkdir(mode=0o700, exist_ok=True)
        names = ("captures", "batches", "sessions", "meta", "folded")
        # Damaged views are moved aside and reopened empty (catch_up then rebuilds); ``repaired`` says so.
        self.env, self.dbs, self.repaired = open_views(path, names, map_size)

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

    def folded(self) -> dict[str, Folded]:
        """The summary of every session folded through its seal, by session."""
        with self.env.begin() as txn:
            return {k.decode(): _folded_dec.decode(v) for k, v in txn.cursor(db=self.dbs["folded"])}

    def dump(self) -> dict[str, list[tuple[bytes, bytes]]]:
        """Every key and value of every view, for byte-for-byte comparisons."""
        with self.env.begin() as txn:
            return {name: list(txn.cursor(db=db)) for name, db in self.dbs.items()}

    # ---- applying ---------------------------------------------------------------------

    def catch_up(self) -> ApplyResult:
        """Apply events written since the stored position (rebuild if history changed).

        ``changed`` lists every rewrite of a folded session found since the last
        explicit ``rebuild()``, not only the ones found now: a caller that ignores the
        result (``gc``, ``archive``) must not make the next one miss the warning."""
        pos = self.position()
        if pos is None:
            return self.rebuild()
        if not self._current_format():
            return self._rebuild("the view predates session summaries", keep=True)
        problem = self._check_position(pos)
        if problem:
            log.warning("projection of %s: %s; rebuilding", self.dir.name, problem)
            return self._rebuild(problem, keep=True)
        paths = session_paths(self.dir)
        rewritten = self._check_folded(paths)
        if rewritten:
            return self._rebuild(f"folded session(s) rewritten: {', '.join(rewritten)}", keep=True)
        later = [p for p in paths if p.stem > pos.session]
        current = layout.session_path(self.dir, pos.session)
        sources: list[_Source] = []
        if current.exists() and not pos.sealed:
            sources.append((pos.session, iter_lines(current, pos.seq + 1), current, _identity(current)))
        sources += [(p.stem, iter_lines(p), p, _identity(p)) for p in later]
        changes = _Changes(self.changed(), keep=True)
        applied = self._apply(sources, changes)
        return ApplyResult(applied, False, None, self.position(), changes.all)

    def rebuild(self, reason: str | None = None, *, allow_loss: bool = False) -> ApplyResult:
        """Drop every view (the session summaries are kept, to compare) and replay the
        whole history. ``changed`` names the folded sessions whose bytes now give
        another summary than when they were folded, and the rewrites catch-up recorded
        before; this explicit rebuild then forgets them.

        Refuses (HistoryNotVisible, nothing dropped) when that history is not all
        visible: a batch of the current view whose session was deleted locally after
        archival and is in neither tier, or, without a cold tier, a hot tier whose
        oldest session links to one that is not here. A view rebuilt from the hot tier
        alone would forget archived batches, and remote retention would then orphan
        their objects for good. ``allow_loss`` rebuilds anyway (the operator knows the
        cold tier is gone).
        """
        return self._rebuild(reason, keep=False, allow_loss=allow_loss)

    def changed(self) -> list[str]:
        """The rewrites of folded sessions recorded since the last explicit rebuild."""
        with self.env.begin() as txn:
            raw = txn.get(b"changed", db=self.dbs["meta"])
        return _changed_dec.decode(raw) if raw else []

    def _rebuild(self, reason: str | None, keep: bool, allow_loss: bool = False) -> ApplyResult:
        local = session_paths(self.dir)
        local_names = {p.stem for p in local}
        archived: list[tuple[str, Iterator[bytes]]] = []
        if self.archived_sessions is not None:
            archived = list(self.archived_sessions())  # names now; each session's lines stream later
        if not allow_loss:
            self._check_visible(local, {name for name, _ in archived} | local_names)
        sources: list[_Source] = []
        for name, lines in archived:
            if name not in local_names and (not local or name < local[-1].stem):
                sources.append((name, enumerate(lines), None, NO_FILE))
        folded_from = {"archived": len(sources), "local": len(local)}
        # The identity is taken before the bytes are read: a change while folding
        # leaves a stale identity, so the next catch-up verifies the file again.
        sources += [(p.stem, iter_lines(p), p, _identity(p)) for p in local]
        sources.sort(key=lambda s: s[0])
        changes = _Changes(self.changed(), keep)
        folded = self.dbs["folded"]

        def start(t: _Txn) -> None:
            # The summaries are kept: each is compared with the new one as its session
            # is folded again, so a rebuild cut short loses none of them.
            for name in ("captures", "batches", "sessions", "meta"):
                t.txn.drop(self.dbs[name], delete=False)
            t.txn.put(b"format", VIEW_FORMAT, db=self.dbs["meta"])
            if keep and changes.recorded:
                t.txn.put(b"changed", _enc.encode(changes.recorded), db=self.dbs["meta"])

        def finish(t: _Txn) -> None:
            # A present session that was folded through its seal and no longer reaches one.
            for key, raw in list(t.txn.cursor(db=folded)):
                name = key.decode()
                if name in local_names and name not in changes.sealed:
                    old = _folded_dec.decode(raw)
                    changes.add(
                        t, f"session {name} was folded through its seal ({old.size} lines) and no longer ends in it"
                    )
                    t.txn.delete(key, db=folded)

        applied = self._apply(sources, changes, start, finish)
        return ApplyResult(applied, True, reason, self.position(), changes.all, folded_from)

    def _current_format(self) -> bool:
        with self.env.begin() as txn:
            return txn.get(b"format", db=self.dbs["meta"]) == VIEW_FORMAT

    def _check_folded(self, paths: list[Path]) -> list[str]:
        """Present sessions folded through their seal whose bytes no longer give the
        summary kept for them. Only files whose identity changed are read; one that
        still gives the same summary gets its new identity saved."""
        folded = self.folded()
        rewritten: list[str] = []
        refreshed: dict[str, Folded] = {}
        for path in paths:
            old = folded.get(path.stem)
            if old is None:
                continue  # not folded through its seal yet: the position covers it
            ident = _identity(path)
            if ident == (old.file_bytes, old.mtime_ns, old.ctime_ns, old.ino):
                continue
            now = summarize(path, ident)
            if _same_summary(old, now):
                refreshed[path.stem] = now
            else:
                rewritten.append(path.stem)
        if refreshed and not rewritten:
            with self.env.begin(write=True) as txn:
                for name, f in refreshed.items():
                    txn.put(name.encode(), _enc.encode(f), db=self.dbs["folded"])
        return rewritten

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
        path = layout.session_path(self.dir, pos.session)
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

    def _apply(self, sources: list[_Source], changes: _Changes, start=None, finish=None) -> int:
        """Fold ``sources`` in order; ``start`` and ``finish`` run inside the first and
        the last transaction."""
        applied = 0
        txn = self.env.begin(write=True)
        t = _Txn(txn, self.dbs)
        try:
            if start is not None:
                start(t)
            for session, lines, path, ident in sources:
                summary = _Summary() if path is None else None
                last: StoredEvent | None = None
                for _, line in lines:
                    e = decode_line(line)
                    if summary is not None:
                        summary.add(line)
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
                    if last.kind == "session.sealed":
                        done = summary.folded() if summary is not None else _summary_of_folded(path, ident, last)
                        self._save_summary(t, session, done, changes)
                    self._save_position(t, session, last)
            if finish is not None:
                finish(t)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
        return applied

    def _save_summary(self, t: _Txn, session: str, done: Folded, changes: _Changes) -> None:
        """In the transaction of the position that says the session is done, with the
        record of a change when it was folded before as something else."""
        key = session.encode()
        raw = t.txn.get(key, db=self.dbs["folded"])
        changes.sealed.add(session)
        if raw is not None:
            old = _folded_dec.decode(raw)
            line = _compare(session, old, done)
            if line is not None:
                changes.add(t, line)
            elif (done.file_bytes, done.ino) == (0, 0):
                # The same bytes again, from the cold store: the entry keeps the local
                # file's identity, so a rebuild with a store changes nothing stored.
                return
        t.txn.put(key, _enc.encode(done), db=self.dbs["folded"])

    def _save_position(self, t: _Txn, session: str, e: StoredEvent) -> None:
        pos = Position(session=session, seq=e.seq, chain=e.chain, sealed=e.kind == "session.sealed")
        t.txn.put(b"position", _enc.encode(pos), db=self.dbs["meta"])


def _summary_of_folded(path: Path, ident: Identity, seal: StoredEvent) -> Folded:
    """The summary of a local session just folded through ``seal``. The file is read
    again, by the verifier; its seal line must be the one folded (same seq, and the
    chain it states, which the verifier recomputed from every line before). If not, the
    file changed while it was folded, and the entry says so: it then matches no later
    reading, so the next catch-up warns and folds the file again."""
    done = summarize(path, ident)
    if not done.problem and (done.size, done.chain) != (seal.seq + 1, seal.chain):
        done.problem = f"changed while folded (seal at seq {seal.seq}, chain {seal.chain[:16]}.. folded)"
    return done
