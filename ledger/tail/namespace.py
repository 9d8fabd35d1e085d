"""Following one namespace (or one session file) across rotations: its backlog, read
backwards from the newest session and reaching into older ones, then each line as it
is appended, then the next session once the writer seals this one.

Files are read through a descriptor kept open, so archival deleting a session being
read changes nothing. A partial line is held until its LF arrives. Besides every line
read, the lines already read are re-checked (with ``verify``) when something other
than an append touched the file: a writer closing it (inotify ``IN_CLOSE_WRITE``), its
modification time changing without it growing, or another file renamed over it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from .. import format as fmt
from .. import layout
from ..errors import EvidenceError
from ..verify import prev_link, verify_file
from ..verify.incremental import ANY_PREV, TailVerifier, failure
from .backward import last_boundary, lines_backward
from .items import Notice, Parsed, TailEvent, TailItem, TailOptions, Verified, matches, parse_line
from .watch import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO, REFRESH_S

READ_MAX = 4 * 2**20


class _Session:
    __slots__ = ("path", "fd", "offset", "partial", "skipping", "sealed", "verifier", "seen", "ino", "session")

    def __init__(self, path: Path, fd: int, offset: int, verifier: TailVerifier | None) -> None:
        self.path = path
        self.session = session_name(path)
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


def session_name(path: Path) -> str:
    """The session a file holds: its name without ``.ndjson`` (a file given by path may lack it)."""
    return path.name.removesuffix(layout.SESSION_SUFFIX)


class Source:
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
            names = sorted(e.name for e in os.scandir(self.dir) if layout.is_session_name(e.name) and e.is_file())
        except FileNotFoundError:
            return []
        return [self.dir / n for n in names]

    def _verifier(self, path: Path, expected_prev: object = ANY_PREV) -> TailVerifier | None:
        if not self.opts.verify:
            return None
        return TailVerifier(str(path), self.opts.trust(), expected_prev, self.opts.jobs)

    def _verified_item(
        self, session: str, path: Path, lines: int, checkpoints: int, sealed: bool, whole: bool
    ) -> Verified:
        o = self.opts
        return Verified(
            self.namespace,
            session,
            path,
            lines,
            checkpoints,
            sealed,
            keys=len(o.keys),
            whole=whole,
            verifiers=len(o.verifiers),
            fs_seeds=len(o.fs_seeds),
        )

    def _verified(self, s: _Session) -> Verified:
        v = s.verifier
        return self._verified_item(s.session, s.path, v.lines, v.checkpoints, v.sealed, False)

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
        newer_prev: object = s.verifier.prev if s.verifier is not None and s.verifier.opened else ANY_PREV
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
        report = verify_file(path, self.opts.trust(), jobs=self.opts.jobs)
        if not report.ok:
            raise failure(str(path), report.first_error)
        if newer_prev is not ANY_PREV and newer_prev != prev_link(report):
            raise EvidenceError(
                f"{newer}: line 1: prev_mismatch: prev does not match sealed session {report.session}",
                path=str(newer),
                line=1,
            )
        item = self._verified_item(session_name(path), path, report.events, report.checkpoints, report.sealed, True)
        return item, report.prev

    def _collect(self, path: Path, fd: int, end: int, want: int | None, found: list[TailEvent]) -> bool:
        """Add matching events of one file, newest first; True once enough are found."""
        session = session_name(path)
        since = self.opts.since
        for _off, raw in lines_backward(fd, end):
            if raw is None:
                return True
            p = parse_line(raw)
            if p is not None and since is not None and p.ts < since:
                return True
            if matches(p, self.opts):
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
            if any(m & IN_CLOSE_WRITE for n, m in hint if n == s.path.name):
                self._recheck(s)
            if any(m & (IN_CREATE | IN_MOVED_TO) for n, m in hint if n == s.path.name):
                self._replaced(s)
        if s.verifier is not None and hint is None and now - self._stat_path >= REFRESH_S:
            self._stat_path = now
            self._replaced(s)
        if self.single is not None:
            if s.sealed and self.opts.follow:
                self.finished = True
            return
        created = hint is not None and any(m & (IN_CREATE | IN_MOVED_TO) and layout.is_session_name(n) for n, m in hint)
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
            expected = s.verifier.summary() if s.verifier is not None and s.sealed and not self._skipped else ANY_PREV
            while True:
                try:
                    fd = _open(nxt)
                    break
                except FileNotFoundError:
                    yield Notice(f"session {nxt.name} was archived before it could be read")
                    self._skipped = True
                    expected = ANY_PREV
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
            if matches(p, opts):
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
