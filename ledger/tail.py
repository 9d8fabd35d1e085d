"""Follow a live ledger like ``tail -f``: ``follow(path, options) -> Iterator[TailItem]``.

Nothing here prints; the ``ledger tail`` command renders what comes back.

What is followed (``follow``):

* a session file: that file; its seal ends the stream (nothing can follow a seal);
* a namespace directory (one holding ``*.ndjson``, ``.lock`` or ``.last-seal.json``):
  its newest session, then each next one as the writer rotates;
* a root directory: every namespace below it (or only ``options.namespace``),
  including namespaces created while following.

The backlog (``options.lines``, the last N matching events) is found by reading
blocks backwards from the end of the newest session (``lines_backward``), so a
10 GB file costs what a small one does. In a directory the backlog reaches into
older sessions when the newest holds fewer than N matches.

Following: one inotify watch per directory (``inotify_simple``: a blocking read
on the inotify descriptor wakes within a fraction of a millisecond, where
watchfiles' Rust loop polls its event set every ``step`` ms). Where inotify
cannot be set up, or when ``LEDGER_TAIL_POLL=1`` / ``options.poll``, the files
are polled with ``fstat`` every 50 ms. Either way everything is re-checked once a
second, so a lost event (queue overflow) costs at most a second. Files are read
through a descriptor kept open, so archival deleting a session being read changes
nothing. A partial line is held until its LF arrives.

Verification (``options.verify``, ``TailVerifier``). The choice: **the followed
session is verified from its line 0**, streamed once at start with ledger.verify's
own chunk scanner (in parallel for large files), then incrementally as lines
arrive. Starting mid-file would leave checkpoints unverifiable: a checkpoint
commits to MTH_n, and MTH_n cannot be recomputed without leaves 0..n-1; with only
the chain from an anchor, an edit that recomputes chain values after the anchor
goes unnoticed even with a key. Reading from line 0 costs one pass over the
session (bounded by the writer's ``rotate_bytes``, 64 MiB by default: a fraction
of a second) and only with ``verify``; without it nothing before the backlog is
read. Each ``Verified`` item says which session was verified from which seq.
Older sessions reached by the backlog are verified whole with ``verify_file`` and
their ``prev`` links checked; on rotation the new session's ``prev`` must name
the session just sealed.

A break raises ``EvidenceError`` naming the file, the 1-based line and the reason
(SPEC.md section 5 reasons, plus ``truncated`` and ``unsealed`` for a session
replaced by a newer one without a seal). Besides every line read, the lines
already read are re-checked when something other than an append touched the
file: a writer closing it (inotify ``IN_CLOSE_WRITE``), its modification time
changing without it growing, or another file renamed over it.
"""

from __future__ import annotations

import heapq
import os
import re
import select
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import NamedTuple

import msgspec

from . import format as fmt
from .errors import EvidenceError, InputError, UsageError
from .verify import IncrementalCheck, Policy, parse_header, prev_link, verify_file
from .when import parse_when, stored_ts

try:  # Linux only; polling is the fallback
    import inotify_simple
except ImportError:  # pragma: no cover - exercised on platforms without it
    inotify_simple = None

POLL_ENV = "LEDGER_TAIL_POLL"
POLL_INTERVAL_S = 0.05
REFRESH_S = 1.0  # everything is re-checked at least this often, whatever the events say
BACK_BLOCK = 64 * 1024
READ_MAX = 4 * 2**20
SUFFIX = ".ndjson"


# ---- what follow() yields -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TailEvent:
    """One stored line. ``raw`` is the line exactly as stored, LF included.

    ``seq``, ``ts``, ``kind`` and ``data`` (raw JSON bytes) are None for a line not
    in the v1 shape (only possible without ``verify``).
    """

    raw: bytes
    seq: int | None
    ts: str | None
    kind: str | None
    data: bytes | None
    namespace: str
    session: str
    path: Path


@dataclass(frozen=True, slots=True)
class SessionChange:
    """The next event comes from another session of ``namespace`` (None: the first shown)."""

    namespace: str
    session: str
    path: Path
    previous: str | None


@dataclass(frozen=True, slots=True)
class Verified:
    """A session checked from seq 0 up to ``lines`` lines; later lines are checked as read."""

    namespace: str
    session: str
    path: Path
    lines: int
    checkpoints: int
    sealed: bool
    keys: int  # trusted keys; 0 = signatures not checked
    whole: bool  # an older session verified whole (verify_file), not followed


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the operator should know that is not an event (never evidence of tamper)."""

    message: str


class Idle:
    """follow() has nothing more for now and is about to wait: a good time to flush."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "IDLE"


IDLE = Idle()
TailItem = TailEvent | SessionChange | Verified | Notice | Idle


@dataclass(frozen=True)
class TailOptions:
    """What to show and how to follow. ``lines=None`` means no limit (use with ``since``)."""

    lines: int | None = 10
    follow: bool = False
    kinds: tuple[str, ...] = ()  # fnmatch globs on the kind; any may match
    since: str | None = None  # a ts as stored (see parse_since); older events are skipped
    namespace: str | None = None  # with a root directory: follow only this namespace
    verify: bool = False
    keys: tuple[bytes, ...] = ()  # trusted HMAC keys (with verify)
    poll: bool | None = None  # force polling; None: LEDGER_TAIL_POLL decides
    poll_interval_s: float = POLL_INTERVAL_S
    stop_fd: int | None = None  # follow() ends when this fd reports an error (a closed pipe)
    jobs: int = 0  # worker processes for verifying large files (0 = one per core)

    def __post_init__(self) -> None:
        if self.lines is not None and self.lines < 0:
            raise UsageError("lines must be >= 0")
        if self.keys and not self.verify:
            raise UsageError("keys are only used with verify")
        if self.poll_interval_s <= 0:
            raise UsageError("poll interval must be positive")


# ---- parsing -------------------------------------------------------------------------


class Parsed(NamedTuple):
    seq: int
    ts: str
    kind: str
    data: bytes


def parse_since(text: str, now: float | None = None) -> str:
    """``--since``: the shared time grammar (ledger/when.py), as a ts in the stored form,
    which sorts as text like the instants it names. Raises UsageError."""
    return stored_ts(parse_when(text, now, option="--since"))


def parse_line(raw: bytes) -> Parsed | None:
    """seq, ts, kind and raw data of a line (LF optional), or None if not in the v1 shape.

    Uses the verifier's header pattern; checks shape only, not the chain.
    """
    head = parse_header(raw)
    if head is None:
        return None
    seq, ts, kind, start, end = head
    return Parsed(seq, ts, kind, raw[start:end])


def _matches(p: Parsed | None, opts: TailOptions) -> bool:
    if p is None:
        return not opts.kinds and opts.since is None
    if opts.since is not None and p.ts < opts.since:
        return False
    return not opts.kinds or any(fnmatchcase(p.kind, g) for g in opts.kinds)


# ---- presentation helpers (pure: the CLI colours them) --------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FAMILIES = {
    "capture": "capture",
    "upload": "upload",
    "deletion": "deletion",
    "delete": "deletion",
    "session": "session",
    "checkpoint": "checkpoint",
}


def family(kind: str | None) -> str:
    """capture, upload, deletion, session, checkpoint or other (for colouring)."""
    if not kind:
        return "other"
    if kind == fmt.KIND_CHECKPOINT:
        return "checkpoint"
    return _FAMILIES.get(kind.split(".", 1)[0].split(":", 1)[0], "other")


def clean(text: str) -> str:
    """Control characters shown escaped: data must not drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _short(value: object, width: int = 60) -> str:
    s = value if isinstance(value, str) else msgspec.json.encode(value).decode("utf-8", "replace")
    s = clean(s)
    return s if len(s) <= width else s[: width - 1] + "…"


def summary(ev: TailEvent, width: int = 240) -> str:
    """A one-line summary of an event's data."""
    if ev.data is None:
        return _short(ev.raw.decode("utf-8", "replace").rstrip("\n"), width)
    try:
        data = msgspec.json.decode(ev.data)
    except msgspec.DecodeError:
        return _short(ev.data.decode("utf-8", "replace"), width)
    if not isinstance(data, dict):
        return _short(data, width)
    if ev.kind == fmt.KIND_OPENED:
        prev = data.get("prev")
        parts = [f"session {_short(data.get('session'))}"]
        if isinstance(prev, dict):
            parts.append(f"prev {_short(prev.get('session'))} ({_short(prev.get('size'))} lines)")
        else:
            parts.append("first session of the namespace")
        if data.get("quarantined"):
            parts.append(f"QUARANTINED {_short(data['quarantined'])}: {_short(data.get('quarantine_reason'), 120)}")
        return _short(" · ".join(parts), width)
    if ev.kind in fmt.SIGNED_KINDS:
        parts = []
        if ev.kind == fmt.KIND_SEALED:
            parts.append(f"reason {_short(data.get('reason'))}")
        parts.append(f"size {_short(data.get('size'))}")
        parts.append(f"root {_short(str(data.get('root', ''))[:16])}…")
        keys = [_short(s.get("key"), 16) for s in data.get("sigs") or () if isinstance(s, dict)]
        parts.append(f"signed by {', '.join(keys) or 'nobody'}")
        dropped = fmt.dropped_total(data.get("dropped")) if _is_dropped(data.get("dropped")) else 0
        if dropped:
            parts.append(f"DROPPED {dropped}")
        return _short(" · ".join(parts), width)
    text = " ".join(f"{clean(str(k))}={_short(v)}" for k, v in data.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_dropped(d: object) -> bool:
    return isinstance(d, int) or (isinstance(d, dict) and all(isinstance(v, int) for v in d.values()))


# ---- reading backwards ------------------------------------------------------------------


def lines_backward(fd: int, end: int, block: int = BACK_BLOCK) -> Iterator[tuple[int, bytes | None]]:
    """(offset, line with its LF) of the complete lines in bytes [0, end), last first.

    Precondition: ``end`` is 0 or just after an LF. Reads blocks backwards from
    ``end``; a line longer than MAX_LINE_BYTES yields (offset it ends at, None)
    and stops, never buffered whole.
    """
    pos = end
    buf = b""
    while pos > 0:
        n = min(block, pos)
        pos -= n
        buf = os.pread(fd, n, pos) + buf
        if pos == 0:
            start = 0
        else:
            nl = buf.find(b"\n")
            if nl == len(buf) - 1:  # no complete line in buf yet: read more, faster
                if len(buf) > fmt.MAX_LINE_BYTES + 1:
                    yield pos + len(buf), None
                    return
                block = min(block * 2, 4 * 2**20)
                continue
            start = nl + 1
        parts = buf[start:].split(b"\n")
        parts.pop()  # buf ends in LF
        off = pos + len(buf)
        for part in reversed(parts):
            off -= len(part) + 1
            yield off, part + b"\n"
        buf = buf[:start]


def last_boundary(fd: int, size: int) -> int:
    """The offset just after the last LF in bytes [0, size) (0 if none)."""
    pos = size
    block = BACK_BLOCK
    while pos > 0:
        n = min(block, pos)
        pos -= n
        i = os.pread(fd, n, pos).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
        block = min(block * 2, 4 * 2**20)
    return 0


# ---- verification -------------------------------------------------------------------

_ANY = object()  # no expectation on prev


def _first_error(check: IncrementalCheck, display: str) -> EvidenceError:
    e = check.report.first_error
    where = f"line {e.line}: " if e and e.line is not None else ""
    what = f"{e.reason}: {e.detail}" if e else "does not verify"
    return EvidenceError(f"{display}: {where}{what}", path=display, line=e.line if e else None)


class TailVerifier:
    """SPEC.md section 5 for one session file, fed line by line as it is read.

    Always starts at line 0 (see the module docstring for why): ``verify_prefix``
    streams bytes [0, end) through ledger.verify.IncrementalCheck
    (shape, seq, chain, checkpoints' size, root, chain and, given keys, signatures),
    then ``feed`` checks each further batch of lines with the same code, keeping
    the Merkle tree as a compact range (O(log n) memory). Unsealed is not an error
    here: the session is live. ``expected_prev``, when given, is what line 0's
    ``prev`` must say (the session sealed just before this one).
    """

    def __init__(self, path: str, keys: tuple[bytes, ...] = (), expected_prev: object = _ANY, jobs: int = 0) -> None:
        self.path = path
        self.keys = keys
        self.jobs = jobs
        self._check = IncrementalCheck(path, Policy(keys=keys, jobs=1))
        self._expected_prev = expected_prev

    # state
    @property
    def lines(self) -> int:
        return self._check.lines

    @property
    def last_chain(self) -> bytes:
        return self._check.last_chain

    @property
    def sealed(self) -> bool:
        return self._check.sealed

    @property
    def checkpoints(self) -> int:
        return self._check.report.checkpoints

    @property
    def prev(self) -> fmt.PrevLink | None:
        return self._check.report.prev

    @property
    def opened(self) -> bool:
        return self._check.report.session is not None

    def summary(self) -> fmt.PrevLink:
        """What the next session's ``prev`` must say about this one (meaningful once sealed)."""
        r = self._check.report
        return fmt.PrevLink(
            session=r.session or "", size=self.lines, root=self._check.root().hex(), chain=self.last_chain.hex()
        )

    # checking
    def verify_prefix(self, end: int, source: str | None = None) -> None:
        """Check bytes [0, end) of the file (``source``: where to read it, default ``path``).

        Precondition: nothing fed yet; ``end`` is at a line boundary.
        """
        if self.lines:
            raise ValueError("verify_prefix must come first")
        if not self._check.scan_prefix(end, source, self.jobs):
            raise _first_error(self._check, self.path)
        self._check_prev()

    def feed(self, lines: list[bytes]) -> tuple[int, EvidenceError | None]:
        """Check the next lines (without their LF). Returns how many hold, and the
        error of the first that does not (None if all hold)."""
        if not lines:
            return 0, None
        before = self._check.lines
        if not self._check.feed(lines):
            return self._check.lines - before, _first_error(self._check, self.path)
        err = self._check_prev()
        if err is not None:
            return 0, err
        return len(lines), None

    def _check_prev(self) -> EvidenceError | None:
        if self._expected_prev is _ANY or not self.opened:
            return None
        expected, self._expected_prev = self._expected_prev, _ANY
        if self.prev == expected:
            return None
        name = expected.session if isinstance(expected, fmt.PrevLink) else "?"
        found = "null" if self.prev is None else f"{self.prev.session} ({self.prev.size} lines)"
        self._check.fail(1, 0, "prev_mismatch", f"prev is {found}, not sealed session {name} that precedes it")
        return _first_error(self._check, self.path)

    def recheck(
        self, end: int, source: str | None = None, lines: int | None = None, chain: bytes | None = None
    ) -> None:
        """Re-verify bytes [0, end) as they are now: raise if they no longer verify or no
        longer end in the chain value read before (an edit with recomputed hashes).
        ``lines``/``chain``: what [0, end) held when read (default: everything fed)."""
        lines = self.lines if lines is None else lines
        chain = self.last_chain if chain is None else chain
        fresh = TailVerifier(self.path, self.keys, jobs=self.jobs)
        if not fresh._check.scan_prefix(end, source, self.jobs):
            err = _first_error(fresh._check, self.path)
            raise EvidenceError(f"{err} (changed after it was read)", path=err.path, line=err.line)
        if fresh.lines < lines:
            line = fresh.lines + 1
            raise EvidenceError(
                f"{self.path}: line {line}: truncated: only {fresh.lines} of the {lines} lines read are left",
                path=self.path,
                line=line,
            )
        if fresh.last_chain != chain or fresh.lines != lines:
            raise EvidenceError(
                f"{self.path}: line {lines}: chain_mismatch: lines 1-{lines} were rewritten after they "
                "were read (chain values recomputed); the edit is at or before this line",
                path=self.path,
                line=lines,
            )


# ---- one session being read -------------------------------------------------------------


class _Session:
    __slots__ = ("path", "fd", "offset", "partial", "skipping", "sealed", "verifier", "seen", "ino", "session")

    def __init__(self, path: Path, fd: int, offset: int, verifier: TailVerifier | None) -> None:
        self.path = path
        self.session = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
        self.fd = fd
        self.offset = offset  # end of the last complete line consumed
        self.partial = b""  # bytes after it, held until their LF arrives
        self.skipping = False  # discarding an over-long line (without verify)
        self.sealed = False
        self.verifier = verifier
        self.seen: tuple[int, int] | None = None  # (size, mtime_ns) when last caught up
        self.ino = os.fstat(fd).st_ino

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def source(self) -> str:
        """A path that reaches this very file, even once deleted or replaced."""
        proc = f"/proc/self/fd/{self.fd}"
        return proc if os.path.exists(proc) else str(self.path)


def _open(path: Path) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))


def _is_session_name(name: str) -> bool:
    return name.endswith(SUFFIX) and not name.startswith(".")


class _Source:
    """One namespace (or one file): the session being followed and how to move on."""

    def __init__(self, opts: TailOptions, namespace: str, directory: Path, single: Path | None = None) -> None:
        self.opts = opts
        self.namespace = namespace
        self.dir = directory
        self.single = single
        self.cur: _Session | None = None
        self.finished = False
        self._listed = 0.0
        self._stat_path = 0.0
        self._skipped = False  # a session vanished unread: the next prev link cannot be checked

    def close(self) -> None:
        if self.cur is not None:
            self.cur.close()

    def sessions(self) -> list[Path]:
        if self.single is not None:
            return [self.single]
        try:
            names = sorted(e.name for e in os.scandir(self.dir) if _is_session_name(e.name) and e.is_file())
        except FileNotFoundError:
            return []
        return [self.dir / n for n in names]

    def _verifier(self, path: Path, expected_prev: object = _ANY) -> TailVerifier | None:
        if not self.opts.verify:
            return None
        return TailVerifier(str(path), self.opts.keys, expected_prev, self.opts.jobs)

    def _verified(self, s: _Session) -> Verified:
        v = s.verifier
        return Verified(self.namespace, s.session, s.path, v.lines, v.checkpoints, v.sealed, len(self.opts.keys), False)

    # -- the backlog ---------------------------------------------------------------

    def backlog(self) -> tuple[list[TailItem], list[TailEvent]]:
        """Open the newest session at its last complete line; return the last N matching
        events (oldest first) and what was verified."""
        notes: list[TailItem] = []
        paths = self.sessions()
        if not paths:
            return notes, []
        newest = paths[-1]
        fd = _open(newest)
        try:
            end = last_boundary(fd, os.fstat(fd).st_size)
            s = _Session(newest, fd, end, self._verifier(newest))
        except BaseException:
            os.close(fd)
            raise
        self.cur = s
        if s.verifier is not None:
            s.verifier.verify_prefix(end, s.source())
            s.sealed = s.verifier.sealed
            notes.append(self._verified(s))
        elif end:
            last = next(lines_backward(fd, end), (0, None))[1]
            p = parse_line(last) if last else None
            s.sealed = p is not None and p.kind == fmt.KIND_SEALED
        want = self.opts.lines
        if want == 0:
            return notes, []
        found: list[TailEvent] = []
        newer_prev: object = s.verifier.prev if s.verifier is not None and s.verifier.opened else _ANY
        newer = newest
        for path in reversed(paths):
            if path is newest:
                pfd, pend, own = fd, end, False
            else:
                if self.opts.verify:
                    item, newer_prev = self._verify_whole(path, newer, newer_prev)
                    notes.append(item)
                try:
                    pfd = _open(path)
                except FileNotFoundError:  # archived meanwhile
                    break
                pend, own = last_boundary(pfd, os.fstat(pfd).st_size), True
            try:
                done = self._collect(path, pfd, pend, want, found)
            finally:
                if own:
                    os.close(pfd)
            newer = path
            if done:
                break
        found.reverse()
        return notes, found

    def _verify_whole(self, path: Path, newer: Path, newer_prev: object) -> tuple[Verified, object]:
        """An older session the backlog reaches into: verified whole, and linked to the next."""
        report = verify_file(path, Policy(keys=self.opts.keys, jobs=self.opts.jobs))
        if not report.ok:
            e = report.first_error
            where = f"line {e.line}: " if e.line is not None else ""
            raise EvidenceError(f"{path}: {where}{e.reason}: {e.detail}", path=str(path), line=e.line)
        if newer_prev is not _ANY and newer_prev != prev_link(report):
            raise EvidenceError(
                f"{newer}: line 1: prev_mismatch: prev does not match sealed session {report.session}",
                path=str(newer),
                line=1,
            )
        item = Verified(
            self.namespace,
            path.name[: -len(SUFFIX)],
            path,
            report.events,
            report.checkpoints,
            report.sealed,
            len(self.opts.keys),
            True,
        )
        return item, report.prev

    def _collect(self, path: Path, fd: int, end: int, want: int | None, found: list[TailEvent]) -> bool:
        """Add matching events of one file, newest first; True once enough are found."""
        session = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
        since = self.opts.since
        for _off, raw in lines_backward(fd, end):
            if raw is None:
                return True
            p = parse_line(raw)
            if p is not None and since is not None and p.ts < since:
                return True
            if _matches(p, self.opts):
                found.append(self._event(raw, p, session, path))
                if want is not None and len(found) >= want:
                    return True
        return self.single is not None

    def _event(self, raw: bytes, p: Parsed | None, session: str, path: Path) -> TailEvent:
        if p is None:
            return TailEvent(raw, None, None, None, None, self.namespace, session, path)
        return TailEvent(raw, p.seq, p.ts, p.kind, p.data, self.namespace, session, path)

    # -- following -------------------------------------------------------------------

    def refresh(self, hint: list[tuple[str, int]] | None) -> Iterator[TailItem]:
        """Read what is new. ``hint``: inotify events of this directory, or None to check everything."""
        now = time.monotonic()
        if self.cur is None:
            paths = self.sessions() if hint is None or hint else []
            if paths:
                yield from self._start(paths[0])
            return
        s = self.cur
        names = {name for name, _ in hint} if hint is not None else set()
        if hint is None or s.path.name in names:
            yield from self._drain(s, suspicious_ok=True)
        if s.verifier is not None and hint is not None and s.path.name in names:
            if any(m & _IN_CLOSE_WRITE for n, m in hint if n == s.path.name):
                self._recheck(s)
            if any(m & (_IN_CREATE | _IN_MOVED_TO) for n, m in hint if n == s.path.name):
                self._replaced(s)
        if s.verifier is not None and hint is None and now - self._stat_path >= REFRESH_S:
            self._stat_path = now
            self._replaced(s)
        if self.single is not None:
            if s.sealed and self.opts.follow:
                self.finished = True
            return
        created = hint is not None and any(m & (_IN_CREATE | _IN_MOVED_TO) and _is_session_name(n) for n, m in hint)
        if s.sealed or created or (hint is None and now - self._listed >= REFRESH_S):
            self._listed = now
            yield from self._advance()

    def _start(self, path: Path) -> Iterator[TailItem]:
        """The first session seen of a namespace that had none: read it from line 0."""
        try:
            fd = _open(path)
        except FileNotFoundError:
            return
        self.cur = _Session(path, fd, 0, self._verifier(path))
        if self.cur.verifier is not None:
            yield self._verified(self.cur)
        yield from self._drain(self.cur)
        if self.single is None and self.cur.sealed:
            yield from self._advance()

    def _advance(self) -> Iterator[TailItem]:
        """Move to the next session once this one is sealed (or superseded)."""
        while True:
            s = self.cur
            nxt = self._next_after(s.path.name)
            if nxt is None:
                return
            if not s.sealed:
                yield from self._drain(s)  # the writer seals before it opens the next session
                if not s.sealed:
                    msg = f"session {s.session} ended without session.sealed and {nxt.name} follows it"
                    if s.verifier is not None:
                        line = s.verifier.lines + 1
                        raise EvidenceError(f"{s.path}: line {line}: unsealed: {msg}", path=str(s.path), line=line)
                    yield Notice(msg)
            expected = s.verifier.summary() if s.verifier is not None and s.sealed and not self._skipped else _ANY
            while True:
                try:
                    fd = _open(nxt)
                    break
                except FileNotFoundError:
                    yield Notice(f"session {nxt.name} was archived before it could be read")
                    self._skipped = True
                    expected = _ANY
                    nxt = self._next_after(nxt.name)
                    if nxt is None:
                        return
            self._skipped = False
            self.cur = _Session(nxt, fd, 0, self._verifier(nxt, expected))
            s.close()
            if self.cur.verifier is not None:
                yield self._verified(self.cur)
            yield from self._drain(self.cur)
            if not self.cur.sealed:
                return

    def _next_after(self, name: str) -> Path | None:
        return next((p for p in self.sessions() if p.name > name), None)

    def _drain(self, s: _Session, suspicious_ok: bool = False) -> Iterator[TailItem]:
        """Read from the held position to the end of the file, line by line."""
        while True:
            st = os.fstat(s.fd)
            pos = s.offset + len(s.partial)
            if st.st_size < s.offset:
                yield from self._truncated(s, st.st_size)
                return
            if st.st_size < pos:  # a torn tail cut by the writer's recovery
                s.partial = b""
                pos = s.offset
            if st.st_size == pos:
                seen = (st.st_size, st.st_mtime_ns)
                if (
                    s.verifier is not None
                    and suspicious_ok
                    and s.seen is not None
                    and s.seen[0] == st.st_size
                    and s.seen[1] != st.st_mtime_ns
                ):
                    self._recheck(s)  # modified without growing: an edit in place?
                s.seen = seen
                return
            data = os.pread(s.fd, min(st.st_size - pos, READ_MAX), pos)
            if not data:
                return
            yield from self._consume(s, data)

    def _consume(self, s: _Session, data: bytes) -> Iterator[TailItem]:
        if s.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                s.offset += len(data)
                return
            s.offset += nl + 1
            data = data[nl + 1 :]
            s.skipping = False
        buf = s.partial + data if s.partial else data
        last = buf.rfind(b"\n")
        if last < 0:
            s.partial = buf
            yield from self._check_partial(s)
            return
        s.partial = buf[last + 1 :]
        lines = buf[:last].split(b"\n")
        err = None
        if s.verifier is not None:
            before = (s.offset, s.verifier.lines, s.verifier.last_chain)
            held, err = s.verifier.feed(lines)
            if err is not None:
                del lines[held:]
        opts = self.opts
        for line in lines:
            raw = line + b"\n"
            p = parse_line(raw)
            s.offset += len(raw)
            if p is not None and p.kind == fmt.KIND_SEALED:
                s.sealed = True
            if _matches(p, opts):
                yield TailEvent(
                    raw,
                    None if p is None else p.seq,
                    None if p is None else p.ts,
                    None if p is None else p.kind,
                    None if p is None else p.data,
                    self.namespace,
                    s.session,
                    s.path,
                )
        if err is not None:
            if before[1]:  # an edit before these lines names the line better
                s.verifier.recheck(before[0], s.source(), before[1], before[2])
            raise err
        yield from self._check_partial(s)

    def _check_partial(self, s: _Session) -> Iterator[TailItem]:
        if len(s.partial) <= fmt.MAX_LINE_BYTES:
            return
        if s.verifier is not None:
            line = s.verifier.lines + 1
            raise EvidenceError(
                f"{s.path}: line {line}: line_too_long: line longer than {fmt.MAX_LINE_BYTES} bytes",
                path=str(s.path),
                line=line,
            )
        s.offset += len(s.partial)
        s.partial = b""
        s.skipping = True
        yield Notice(f"{s.path}: skipping a line longer than {fmt.MAX_LINE_BYTES} bytes")

    def _truncated(self, s: _Session, size: int) -> Iterator[TailItem]:
        if s.verifier is not None:
            s.verifier.recheck(min(size, s.offset), s.source())  # names an edit if there is one
            line = s.verifier.lines + 1
            raise EvidenceError(
                f"{s.path}: line {line}: truncated: the file is {size} bytes, shorter than the {s.offset} already read",
                path=str(s.path),
                line=line,
            )
        yield Notice(f"{s.path}: file truncated to {size} bytes; following from its new end")
        s.offset = last_boundary(s.fd, size)
        s.partial = b""
        s.seen = None

    def _recheck(self, s: _Session) -> None:
        if s.verifier is not None and s.verifier.lines:
            s.verifier.recheck(s.offset, s.source())
            st = os.fstat(s.fd)
            s.seen = (st.st_size, st.st_mtime_ns)

    def _replaced(self, s: _Session) -> None:
        """Another file now has this session's name (an editor's save, ``sed -i``): it must
        hold exactly what was read."""
        try:
            ino = os.stat(s.path).st_ino
        except FileNotFoundError:
            return  # archived: the open descriptor still reads the file
        if ino == s.ino or s.verifier is None or not s.verifier.lines:
            return
        try:
            s.verifier.recheck(s.offset, str(s.path))
        except EvidenceError as exc:
            raise EvidenceError(f"{exc} [another file was renamed over it]", path=exc.path, line=exc.line) from None
        s.ino = ino  # an identical copy: harmless


# ---- watching ---------------------------------------------------------------------------

if inotify_simple is not None:
    _F = inotify_simple.flags
    _IN_MODIFY, _IN_CLOSE_WRITE, _IN_CREATE, _IN_MOVED_TO = _F.MODIFY, _F.CLOSE_WRITE, _F.CREATE, _F.MOVED_TO
    _DIR_MASK = (
        _F.MODIFY | _F.CLOSE_WRITE | _F.CREATE | _F.MOVED_TO | _F.MOVED_FROM | _F.DELETE | _F.DELETE_SELF | _F.MOVE_SELF
    )
    _ROOT_MASK = _F.CREATE | _F.MOVED_TO | _F.ONLYDIR
    _Q_OVERFLOW = _F.Q_OVERFLOW
else:  # pragma: no cover
    _IN_MODIFY, _IN_CLOSE_WRITE, _IN_CREATE, _IN_MOVED_TO = 0x2, 0x8, 0x100, 0x80
    _DIR_MASK = _ROOT_MASK = _Q_OVERFLOW = 0

_STOP = object()


class _PollWatcher:
    """No events: every wait is a full re-check after ``interval`` seconds."""

    kind = "polling"

    def __init__(self, interval: float, stop_fd: int | None) -> None:
        self.interval = interval
        self._poll = select.poll()
        if stop_fd is not None:
            self._poll.register(stop_fd, 0)

    def add(self, directory: Path, root: bool = False) -> str | None:
        return None

    def wait(self, timeout: float) -> object:
        if self._poll.poll(min(timeout, self.interval) * 1000):
            return _STOP
        return None

    def close(self) -> None:
        pass


class _InotifyWatcher:
    """One watch per directory; ``wait`` returns {directory: [(name, mask), ...]}."""

    kind = "inotify"

    def __init__(self, stop_fd: int | None, interval: float) -> None:
        self.interval = interval
        self.degraded = False
        self._ino = inotify_simple.INotify()
        self._dirs: dict[int, Path] = {}
        self._poll = select.poll()
        self._poll.register(self._ino.fileno(), select.POLLIN)
        self._stop_fd = stop_fd
        if stop_fd is not None:
            self._poll.register(stop_fd, 0)

    def add(self, directory: Path, root: bool = False) -> str | None:
        """Watch one more directory; if that fails, fall back to polling everything."""
        try:
            wd = self._ino.add_watch(directory, _ROOT_MASK if root else _DIR_MASK)
        except OSError as exc:
            if self.degraded:
                return None
            self.degraded = True
            return f"cannot watch {directory} with inotify: {exc.strerror or exc}"
        self._dirs[wd] = directory
        return None

    def wait(self, timeout: float) -> object:
        if self.degraded:
            timeout = min(timeout, self.interval)
        ready = self._poll.poll(timeout * 1000)
        if not ready or self.degraded and not any(fd == self._stop_fd for fd, _ in ready):
            if self.degraded and ready:
                self._ino.read(timeout=0)  # drop them: everything is re-checked
            return None
        if any(fd == self._stop_fd for fd, _ in ready):
            return _STOP
        hints: dict[Path, list[tuple[str, int]]] = {}
        for ev in self._ino.read(timeout=0):
            if ev.mask & _Q_OVERFLOW:
                return None
            d = self._dirs.get(ev.wd)
            if d is not None:
                hints.setdefault(d, []).append((ev.name, ev.mask))
        return hints

    def close(self) -> None:
        self._ino.close()


def _make_watcher(opts: TailOptions, directories: list[tuple[Path, bool]]) -> tuple[object, str | None]:
    """inotify where it can be set up, else polling; the reason when polling."""
    forced = opts.poll if opts.poll is not None else os.environ.get(POLL_ENV, "") not in ("", "0")
    if forced:
        return _PollWatcher(opts.poll_interval_s, opts.stop_fd), None
    if inotify_simple is None:
        why = "inotify_simple is not installed"
    else:
        try:
            w = _InotifyWatcher(opts.stop_fd, opts.poll_interval_s)
        except OSError as exc:
            why = f"inotify unavailable: {exc.strerror or exc}"
        else:
            for d, root in directories:
                why = w.add(d, root)
                if why:
                    w.close()
                    break
            else:
                return w, None
    return _PollWatcher(opts.poll_interval_s, opts.stop_fd), _polling(why, opts)


def _polling(why: str, opts: TailOptions) -> str:
    return f"{why}; polling every {opts.poll_interval_s * 1000:.0f} ms"


# ---- targets ----------------------------------------------------------------------------


def target_kind(path: str | os.PathLike[str]) -> str:
    """How ``follow`` reads ``path``: "file", "namespace" or "root" ("missing" if absent)."""
    p = Path(path)
    if p.is_file():
        return "file"
    if p.is_dir():
        return "namespace" if _is_namespace_dir(p) else "root"
    return "missing"


def _is_namespace_dir(d: Path) -> bool:
    try:
        return any(_is_session_name(e.name) or e.name in (".lock", ".last-seal.json") for e in os.scandir(d))
    except OSError:
        return False


def _namespace_dirs(root: Path, only: str | None) -> list[Path]:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{root}: {exc.strerror}") from None
    return [
        root / e.name
        for e in entries
        if e.is_dir() and not e.name.startswith(".") and (only is None or e.name == only) and _valid_ns(e.name)
    ]


def _resolve(path: Path, opts: TailOptions) -> tuple[str, list[_Source]]:
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if opts.namespace is not None and not _valid_ns(opts.namespace):
        raise UsageError(f"invalid namespace {opts.namespace!r}")
    if path.is_file():
        if opts.namespace is not None:
            raise UsageError("--namespace goes with a root directory, not a session file")
        return "file", [_Source(opts, path.resolve().parent.name, path.parent, single=path)]
    if not path.is_dir():
        raise InputError(f"{path}: not a file or directory")
    if _is_namespace_dir(path):
        if opts.namespace is not None and opts.namespace != path.resolve().name:
            raise UsageError(f"{path} is the namespace {path.resolve().name}, not {opts.namespace}")
        return "namespace", [_Source(opts, path.resolve().name, path)]
    if opts.namespace is not None:
        ns = path / opts.namespace
        if not ns.is_dir():
            raise InputError(f"{ns}: no such namespace")
        return "namespace", [_Source(opts, opts.namespace, ns)]
    return "root", [_Source(opts, d.name, d) for d in _namespace_dirs(path, None)]


def _valid_ns(ns: str) -> bool:
    try:
        fmt.check_namespace(ns)
    except ValueError:
        return False
    return True


# ---- follow -----------------------------------------------------------------------------


class _Changes:
    """Puts a SessionChange before the first event of each new session of a namespace."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def __call__(self, items) -> Iterator[TailItem]:
        for item in items:
            if isinstance(item, TailEvent):
                before = self.last.get(item.namespace)
                if before != item.session:
                    self.last[item.namespace] = item.session
                    yield SessionChange(item.namespace, item.session, item.path, before)
            yield item


def follow(path: str | os.PathLike[str], options: TailOptions = TailOptions()) -> Iterator[TailItem]:
    """The last ``options.lines`` matching events of ``path``, then (``options.follow``)
    every new one as it is written, across rotations. Raises InputError/UsageError
    before the first item for a bad path, EvidenceError at a break (with ``verify``).

    Yields ``IDLE`` whenever it is about to wait; returns when ``options.follow`` is
    off, when a followed session file is sealed, or when ``options.stop_fd`` closes.
    """
    opts = options
    root = Path(path)
    mode, sources = _resolve(root, opts)
    watcher = None
    changes = _Changes()
    try:
        if opts.follow:
            dirs = [(s.dir, False) for s in sources]
            if mode == "root":
                dirs.append((root, True))
            watcher, why = _make_watcher(opts, dirs)
            if why:
                yield Notice(why)
        notes: list[TailItem] = []
        backlogs: list[list[TailEvent]] = []
        for src in sources:
            n, evs = src.backlog()
            notes.extend(n)
            backlogs.append(evs)
        if not opts.follow and all(s.cur is None for s in sources):
            raise InputError(f"{root}: no session files (*{SUFFIX}) found")
        yield from notes
        merged = backlogs[0] if len(backlogs) == 1 else list(heapq.merge(*backlogs, key=lambda e: e.ts or ""))
        if opts.lines is not None and len(merged) > opts.lines:
            merged = merged[len(merged) - opts.lines :]
        yield from changes(merged)
        if not opts.follow:
            return
        if all(s.cur is None for s in sources):
            yield Notice(f"{root}: no sessions yet; waiting for a writer")
        yield from _follow(opts, root if mode == "root" else None, sources, watcher, changes)
    finally:
        for src in sources:
            src.close()
        if watcher is not None:
            watcher.close()


def _follow(
    opts: TailOptions, root: Path | None, sources: list[_Source], watcher, changes: _Changes
) -> Iterator[TailItem]:
    known = {s.dir for s in sources}
    hints: object = None  # the first pass checks everything
    last_full = time.monotonic()
    last_root = 0.0
    while True:
        now = time.monotonic()
        full = hints is None or now - last_full >= REFRESH_S
        if full:
            last_full = now
        for src in sources:
            hint = None if full else hints.get(src.dir, [])
            if hint == []:
                continue
            yield from changes(src.refresh(hint))
        if root is not None and (full and now - last_root >= REFRESH_S or (not full and root in hints)):
            last_root = now
            for d in _namespace_dirs(root, None):
                if d not in known:
                    known.add(d)
                    src = _Source(opts, d.name, d)
                    why = watcher.add(d)
                    if why:
                        yield Notice(_polling(why, opts))
                    sources.append(src)
                    yield from changes(src.refresh(None))
        if sources and all(s.finished for s in sources):
            s = sources[0].cur
            yield Notice(f"{s.path}: session {s.session} is sealed; nothing can follow it")
            yield IDLE
            return
        yield IDLE
        hints = watcher.wait(REFRESH_S)
        if hints is _STOP:
            return
