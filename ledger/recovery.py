"""What survives a crash of the writer: the drop counts in ``.drops``, the link in
``.last-seal.json``, and recovery of the newest session at open (SPEC.md section 7).

``Ledger`` inherits ``CrashRecovery``; the methods live here so that the writer
module holds the live path (queue, batches, rotation, a full disk) and this one the
path taken once at open, and again after a full disk.

The writer's tests slow or break the disk and shift the clock through the writer
module's ``_write``, ``_fsync``, ``time`` and ``_write_atomic_file``; these methods
reach them through that module (``_seams()``), at call time, so the same seams hold.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import msgspec

from . import format as fmt
from . import hot, layout
from .errors import LockedError, failure_text
from .files import fsync_dir, sha256_file
from .regular import read_small, regular_or_warn
from .session import SessionBuilder
from .verify import Policy, verify_file

# The writer's logger: recovery is part of what an operator sees the writer do.
log = logging.getLogger("ledger.writer")

DROPS_FILE = layout.DROPS_FILE
DROPS_BYTES = hot.DROPS_BYTES
LAST_SEAL = layout.LAST_SEAL_FILE


@dataclass
class Recovered:
    """What recovery at open (or after a full disk) found and did.

    ``action``: ``none`` (nothing to do: the newest session was sealed, or there is none), ``sealed`` (it was not: it
    is sealed now, reason ``recovered`` or ``disk_full``, its torn tail of
    ``torn_bytes`` cut first), or ``quarantined`` (it did not verify: moved aside, and
    ``opened_extra`` names it for the next session's ``session.opened``). ``prev``
    is the link for the next session; ``carried_dropped`` the drops the crashed
    writer counted that no seal reports yet.

    Read as a mapping too (``r["action"]``, ``r.get("prev")``), as when it was a dict.
    """

    prev: fmt.PrevLink | None = None
    action: Literal["none", "sealed", "quarantined"] = "none"
    opened_extra: dict[str, str] | None = None
    carried_dropped: dict[str, int] = field(default_factory=dict)
    torn_bytes: int = 0

    def __getitem__(self, key: str) -> Any:
        if key not in _RECOVERED_FIELDS:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in _RECOVERED_FIELDS else default


_RECOVERED_FIELDS = frozenset(f.name for f in fields(Recovered))


def _seams():
    """The writer module, looked up when called: it imports this one at its top."""
    from . import writer

    return writer


class CrashRecovery:
    """The crash-safety half of ``Ledger`` (a mixin: it uses the writer's attributes):
    the namespace lock that makes recovery safe to run, the drop counts, the last-seal
    record, and recovery itself."""

    # ---- one writer per namespace -------------------------------------------------------

    def _lock(self) -> int:
        path = layout.lock_path(self.dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(
                    f"namespace {self.namespace} in {self.root} is held by another writer ({holder})"
                ) from None
            raise
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {fmt.format_ts()}\n".encode()
        try:  # who holds the lock, for the next one refused: best effort (a full disk refuses it)
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder, 0)
        except OSError as exc:
            log.debug("ledger %s: could not note the lock holder (%s)", self.namespace, exc.strerror)
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd >= 0:
            try:
                os.ftruncate(self._lock_fd, 0)
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # ---- drop counts that survive a crash ------------------------------------------------

    def _open_drops(self) -> None:
        """Open ``.drops`` with its whole fixed size allocated, so later in-place writes
        need no free space. A partly made file is removed (never left half-written)."""
        path = layout.drops_path(self.dir)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size != DROPS_BYTES:
                os.ftruncate(fd, 0)
                _pwrite_all(fd, b" " * (DROPS_BYTES - 1) + b"\n", 0)
                _seams()._fsync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        self._drops_fd = fd

    def _persist_drops_locked(self) -> None:
        """Rewrite ``.drops`` in place (caller holds the drop lock). Never raises."""
        if self._drops_fd < 0 or not self._drops_session:
            return
        record = self._drops_mac.record(self._drops_session, self.dropped)
        try:
            _pwrite_all(self._drops_fd, record, 0)
        except OSError as exc:  # the counts still reach the next checkpoint or seal written
            log.debug("ledger %s: could not update %s (%s)", self.namespace, DROPS_FILE, exc)

    def _read_drops(self) -> tuple[str, dict[str, int]] | None:
        """(session, counts) from ``.drops`` when its MAC verifies with one of our keys."""
        try:
            raw = read_small(layout.drops_path(self.dir), 1 << 16)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("ledger %s: ignoring unreadable %s (%s)", self.namespace, DROPS_FILE, exc.strerror)
            return None
        try:
            rec = hot.parse_drops(raw)
        except ValueError:
            log.warning("ledger %s: ignoring malformed %s", self.namespace, DROPS_FILE)
            return None
        if rec is None:
            return None
        if hot.drops_authentic(self.namespace, rec, self._keys):
            return rec.session, dict(rec.dropped)
        log.warning("ledger %s: ignoring %s: its MAC does not verify with our keys", self.namespace, DROPS_FILE)
        return None

    # ---- crash recovery ---------------------------------------------------------------

    def _read_last_seal(self) -> fmt.PrevLink | None:
        """The link in ``.last-seal.json`` when its MAC verifies with one of our keys."""
        path = layout.last_seal_path(self.dir)
        try:
            record = hot.parse_last_seal(read_small(path, 4096))  # a FIFO or /dev/zero: ignored, never blocks
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ledger %s: ignoring unreadable %s (%s)", self.namespace, path, exc)
            return None
        if not hot.last_seal_authentic(self.namespace, record, self._keys):
            log.error("ledger %s: %s is not authenticated by our keys: ignored", self.namespace, path)
            return None
        return record.link()

    def _recover(self, live: bool = False) -> Recovered:
        """Seal or quarantine the newest session if a crash (or a full disk) left it
        unsealed, and find the link for the next session from verified bytes.

        ``.last-seal.json`` only says which older sessions need no second look: the
        newest session at or after it is verified, and ``prev`` is the summary of
        the newest sealed session that verified (the record is rewritten to match).
        ``live``: called by a running writer after a full disk; its own counts are
        the truth and nothing is carried.
        """
        record = self._read_last_seal()
        drops = None if live else self._read_drops()
        sessions = [p for p in layout.session_files(self.dir) if regular_or_warn(p)]
        candidates = [p for p in sessions if record is None or p.stem >= record.session]
        result = Recovered(prev=record)
        for i, path in enumerate(reversed(candidates)):
            # Signatures are not checked here: a session signed by a key since rotated is
            # not corrupt. Chain, seq and roots are.
            report = verify_file(path, Policy(allow_unsealed=True, jobs=1))
            if report.ok and report.sealed:
                result.prev = _summary(report)
                if drops and drops[0] == report.session:  # dropped after that seal, reported nowhere
                    result.carried_dropped = _excess(drops[1], _seal_dropped(path))
                if hot.read_seal_record(self.dir, path.stem) is None:
                    size, sha = sha256_file(path)
                    _seams()._write_seal_record(self.dir, result.prev, size, sha)
                break
            if report.ok and report.events > 0 and report.session and report.tree is not None:
                if live:
                    dropped = self._drop_snapshot()
                else:
                    dropped = _last_checkpoint_dropped(path)
                    if drops and drops[0] == report.session:
                        dropped = _merge_max(dropped, drops[1])
                reason = "disk_full" if live else "recovered"
                result.prev, result.torn_bytes = self._seal_recovered(path, report, dropped, reason)
                result.action = "sealed"
                break
            e = report.first_error
            why = failure_text(e.line, e.reason, e.detail) if e else failure_text(None, "no complete line", "")
            if i > 0:
                # Only the newest session can be a crash's leftover; an older one that fails
                # is evidence for `ledger verify` to report, never moved by the writer.
                log.error("ledger %s: session %s does not verify (%s); left in place", self.namespace, path.name, why)
                break
            aside = layout.quarantine_path(path)
            os.rename(path, aside)
            fsync_dir(self.dir)
            log.error("ledger: session %s failed verification (%s); moved aside to %s", path.name, why, aside.name)
            result.opened_extra = {"quarantined": aside.name, "quarantine_reason": why}
            result.action = "quarantined"
            if drops and drops[0] == report.session:
                result.carried_dropped = {k: v for k, v in drops[1].items() if v}
        prev = result.prev
        if prev is not None and prev != record:
            if record is not None:
                log.warning(
                    "ledger %s: %s named %s; rewritten from the verified session",
                    self.namespace,
                    LAST_SEAL,
                    record.session,
                )
            self._write_last_seal(prev)
        return result

    def _seal_recovered(self, path: Path, report, dropped: dict[str, int], reason: str) -> tuple[fmt.PrevLink, int]:
        """Seal an unsealed session that verified, its torn tail cut first: (its summary, the bytes cut)."""
        builder = SessionBuilder.resume(
            self.namespace, report.session, self._keys, report.tree, bytes.fromhex(report.chain), self._sign_fns
        )
        builder.origin = report.origin or builder.origin
        torn = report.torn_tail_bytes
        keep = report.bytes - torn
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            if torn:
                os.ftruncate(fd, keep)
            line = builder.seal_line(self._clock.ts(_seams().time.time()), reason, dropped, torn_bytes=torn)
            try:
                _seams()._write_all(fd, line)
                _seams()._fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, keep)  # never leave half a seal: the next try starts clean
                raise OSError(exc.errno, exc.strerror, str(path)) from None
        finally:
            os.close(fd)
        summary = builder.summary()
        self._write_last_seal(summary)
        size, sha = sha256_file(path)
        _seams()._write_seal_record(self.dir, summary, size, sha)
        log.warning(
            "ledger: sealed unsealed session %s (%s; %d events, %d torn bytes cut, dropped %s)",
            path.name,
            reason,
            report.events,
            torn,
            dropped or 0,
        )
        return summary, torn

    def _write_last_seal(self, link: fmt.PrevLink) -> None:
        path = layout.last_seal_path(self.dir)
        _seams()._write_atomic_file(path, hot.make_last_seal(self.namespace, link, self._keys[0]))


def _summary(report) -> fmt.PrevLink:
    return fmt.PrevLink(session=report.session, size=report.events, root=report.root, chain=report.chain)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _merge_max(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: max(a.get(k, 0), b.get(k, 0)) for k in {*a, *b} if max(a.get(k, 0), b.get(k, 0))}


def _excess(total: Mapping[str, int], reported: Mapping[str, int]) -> dict[str, int]:
    """Counts in ``total`` beyond what a seal already ``reported``, by reason."""
    return {k: v - reported.get(k, 0) for k, v in total.items() if v > reported.get(k, 0)}


def _dropped_of(line: bytes) -> dict[str, int]:
    try:
        data = msgspec.json.decode(line).get("data", {})
    except (msgspec.DecodeError, AttributeError):
        return {}
    dropped = data.get("dropped") if isinstance(data, dict) else None
    if isinstance(dropped, dict):
        return {k: v for k, v in dropped.items() if isinstance(v, int) and not isinstance(v, bool) and v > 0}
    return {}


def _seal_dropped(path: Path) -> dict[str, int]:
    """The ``dropped`` object of a sealed session's last line (a seal is small)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - 65536))
        tail = f.read()
    return _dropped_of(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1])


def _last_checkpoint_dropped(path: Path) -> dict[str, int]:
    """The ``dropped`` object of an unsealed session's last checkpoint, re-derived from
    its bytes (used when ``.drops`` does not name the session)."""
    last = b""
    with open(path, "rb") as f:
        for line in f:
            if b'"kind":"ledger.checkpoint"' in line[:120]:
                last = line
    return _dropped_of(last) if last.endswith(b"\n") else {}
