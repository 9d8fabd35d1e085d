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

This module is the projector (catch-up, rebuild, the position); ``views`` holds
the stored views and their codecs, ``fold`` the function of each event kind,
``summaries`` the session summaries. Every name is importable from here as before.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from .. import events as ev
from .. import layout
from ..errors import InputError
from ..format import decode_opened
from ..reader import StoredEvent, decode_line, iter_lines, session_paths
from ..viewcheck import open_views
from .fold import _FOLD
from .summaries import (
    NO_FILE,
    Folded,
    Identity,
    _changed_dec,
    _Changes,
    _compare,
    _folded_dec,
    _identity,
    _same_summary,
    _Summary,
    summarize,
)
from .views import BatchView, CaptureState, CaptureView, Position, _batch_dec, _cap_dec, _enc, _pos_dec, _Txn

log = logging.getLogger("ledger.projections")

VIEWS_DIR = layout.VIEWS_DIR
# Bumped when the stored layout changes; a view without it is rebuilt once.
VIEW_FORMAT = b"2"
COMMIT_EVERY = 20_000


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


__all__ = [
    "COMMIT_EVERY",
    "NO_FILE",
    "VIEW_FORMAT",
    "VIEWS_DIR",
    "ApplyResult",
    "BatchView",
    "CaptureState",
    "CaptureView",
    "Folded",
    "HistoryNotVisible",
    "Identity",
    "Position",
    "Projector",
    "summarize",
]
