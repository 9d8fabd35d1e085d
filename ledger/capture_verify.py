"""Captures are evidence too: each pcap the ledger recorded, checked against its pointer.

A ``capture.sealed`` event holds the size and sha256 of a pcap as tcpdump wrote it;
the pcap itself never enters the ledger. So a pcap is intact only when its bytes, as
read now, hash to what that event says. The event is the only witness trusted: the
``.sha256`` sidecar in a cold store is written by the same hand as the pcap beside
it and proves nothing, and neither do the LMDB views.

The events are taken from sessions that have just verified, read a second time and
bound to that verification: the chain is recomputed over every line read and must
reach the verified chain value at the verified size, or the session changed
underneath the check and nothing of it is used (``session_changed``).

Verdicts, in the vocabulary of session verdicts (a failing one is exit 1):

* ``ok``: the bytes match the event;
* ``capture_mismatch``: size or sha256 differ from the event;
* ``missing_capture``: the ledger says the pcap is there (sealed and never evicted,
  or offloaded and never deleted remotely) and it is not;
* ``session_changed``: a session's bytes changed between verifying it and reading
  its events;
* ``unrecorded`` and ``unreadable`` (neither a failure nor a pass: not checked): a
  pcap in a store whose ``capture.sealed`` is in none of the sessions verified, so
  nothing can vouch for it; a pcap that could not be read.

This module reads; it never prints, deletes or records.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import msgspec

from . import events as ev
from . import format as fmt
from . import layout
from .files import sha256_file
from .merkle import leaf_hash
from .reader import decode_line, iter_lines

if TYPE_CHECKING:
    from .verify import FileReport

FAILURES = frozenset({"capture_mismatch", "missing_capture", "session_changed"})
NOT_CHECKED = frozenset({"unrecorded", "unreadable"})
_KINDS = frozenset({"capture.sealed", "capture.evicted", "capture.offloaded", "remote.deleted"})
# Bytes that must occur in a session holding any of _KINDS (a kind written with JSON
# escapes needs a backslash-u): a session without them is not read a second time.
_HINTS = (b"capture.", b"remote.deleted", b"\\u")


@dataclass(frozen=True, slots=True)
class CaptureCheck:
    """One capture's verdict. ``where`` is the local path or store URL that was read."""

    capture_id: str
    where: str
    verdict: str
    detail: str = ""
    expected_bytes: int | None = None
    expected_sha256: str | None = None
    found_bytes: int | None = None
    found_sha256: str | None = None
    session: str | None = None  # the session holding its capture.sealed

    @property
    def ok(self) -> bool:
        return self.verdict not in FAILURES

    def as_dict(self) -> dict:
        return {
            "capture_id": self.capture_id,
            "where": self.where,
            "verdict": self.verdict,
            "ok": self.ok,
            "detail": self.detail,
            "expected": {"bytes": self.expected_bytes, "sha256": self.expected_sha256},
            "found": {"bytes": self.found_bytes, "sha256": self.found_sha256},
            "session": self.session,
        }


@dataclass(slots=True)
class CaptureRecord:
    """What the verified events say about one capture."""

    sealed: ev.CaptureSealed
    session: str
    evicted: bool = False
    offloaded: ev.CaptureOffloaded | None = None
    remote_deleted: bool = False


@dataclass(slots=True)
class Recorded:
    """The captures recorded in a set of verified sessions, plus sessions that changed."""

    captures: dict[str, CaptureRecord] = field(default_factory=dict)
    changed: list[CaptureCheck] = field(default_factory=list)


class _SessionChanged(Exception):
    pass


def recorded_captures(sessions: Iterable[tuple[FileReport, Callable[[], Iterable[bytes]]]]) -> Recorded:
    """Fold the capture events of verified sessions, in session order.

    Precondition: ``sessions`` are ``(report, lines)`` in session order, ``lines``
    yielding the session's lines again. Sessions that did not verify are skipped:
    their failure is already reported, and their events vouch for nothing.
    """
    out = Recorded()
    for report, lines in sessions:
        if not report.ok:
            continue
        try:
            for kind, data in _bound_events(lines(), report):
                _fold(out.captures, kind, data, report.session or report.path)
        except OSError as exc:
            detail = f"cannot be read again after it verified: {exc.strerror or exc}"
            out.changed.append(CaptureCheck(capture_id="", where=report.path, verdict="session_changed", detail=detail))
        except _SessionChanged as exc:
            out.changed.append(
                CaptureCheck(capture_id="", where=report.path, verdict="session_changed", detail=str(exc))
            )
    return out


def _bound_events(lines: Iterable[bytes], report: FileReport) -> list[tuple[str, bytes]]:
    """The capture events of a session, only if the lines read are the ones verified."""
    chain, n, picked = fmt.ZERO_CHAIN, 0, []
    for line in lines:
        if n == report.events:
            break  # lines written after the verify (a live session) are not vouched for
        event = fmt.event_of_line(line)
        chain = fmt.next_chain(chain, leaf_hash(event))
        try:
            e = decode_line(line)
        except msgspec.DecodeError:
            raise _SessionChanged(f"line {n + 1} no longer parses") from None
        if e.kind in _KINDS:
            picked.append((e.kind, bytes(e.data)))
        n += 1
    if n != report.events or chain.hex() != report.chain:
        raise _SessionChanged(f"the session changed after it verified (read {n} lines of {report.events})")
    return picked


def _fold(captures: dict[str, CaptureRecord], kind: str, data: bytes, session: str) -> None:
    try:
        d = ev.decode(kind, data)
    except msgspec.ValidationError:
        return  # a verified line of another shape is not a pointer: nothing to check against
    if isinstance(d, ev.CaptureSealed):
        captures[d.capture_id] = CaptureRecord(sealed=d, session=session)
    elif isinstance(d, ev.CaptureEvicted) and d.capture_id in captures:
        captures[d.capture_id].evicted = True
    elif isinstance(d, ev.CaptureOffloaded) and d.capture_id in captures:
        captures[d.capture_id].offloaded = d
    elif isinstance(d, ev.RemoteDeleted):
        kept = {k.get("key") for k in d.kept}
        for cid in d.capture_ids:
            rec = captures.get(cid)
            if rec is not None and rec.offloaded is not None and rec.offloaded.key not in kept:
                rec.remote_deleted = True


def might_hold_captures(path: str | os.PathLike[str]) -> bool:
    """False only when a session file cannot hold a capture event (a cheap byte search)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return False
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                return any(m.find(h) >= 0 for h in _HINTS)
    except (OSError, ValueError):
        return True  # not knowable this way: the read that follows says what is wrong


def check_bytes(rec: CaptureRecord, where: str, read: Callable[[], BinaryIO]) -> CaptureCheck:
    """Hash the pcap as it is now and compare with its capture.sealed event."""
    s = rec.sealed
    with read() as f:
        size, sha = sha256_file(f)
    base = {
        "capture_id": s.capture_id,
        "where": where,
        "expected_bytes": s.bytes,
        "expected_sha256": s.sha256,
        "found_bytes": size,
        "found_sha256": sha,
        "session": rec.session,
    }
    if (size, sha) == (s.bytes, s.sha256):
        return CaptureCheck(verdict="ok", **base)
    detail = f"{size} bytes sha256 {sha[:16]}.., its capture.sealed says {s.bytes} {s.sha256[:16]}.."
    return CaptureCheck(verdict="capture_mismatch", detail=detail, **base)


def missing(rec: CaptureRecord, where: str, why: str) -> CaptureCheck:
    s = rec.sealed
    return CaptureCheck(
        capture_id=s.capture_id,
        where=where,
        verdict="missing_capture",
        detail=why,
        expected_bytes=s.bytes,
        expected_sha256=s.sha256,
        session=rec.session,
    )


# ---- the hot tier ----------------------------------------------------------------------


def verify_local_captures(
    files: Sequence[FileReport], directories: Sequence[str | os.PathLike[str]]
) -> list[CaptureCheck]:
    """Every capture recorded in the sessions verified below ``directories``, checked on disk.

    A pcap is looked for at its event's path, then at ``<namespace dir>/captures/``
    (the root may have moved). One the ledger says is present (sealed, never
    evicted) and that is in neither place is ``missing_capture``. Sessions given as
    single files are not used: a later session, not given, may record the eviction.
    """
    dirs = [Path(d).resolve() for d in directories]
    groups: dict[Path, list[FileReport]] = {}
    for f in files:
        parent = Path(f.path).resolve().parent
        if any(parent == d or d in parent.parents for d in dirs):
            groups.setdefault(parent, []).append(f)
    checks: list[CaptureCheck] = []
    for ns_dir, reports in groups.items():
        readable = [(r, _file_lines(r.path)) for r in reports if r.ok and might_hold_captures(r.path)]
        recorded = recorded_captures(readable)
        checks += recorded.changed
        for _, rec in sorted(recorded.captures.items()):
            if rec.evicted:
                continue
            checks.append(_check_local(rec, ns_dir))
        checks += _unrecorded_local(ns_dir, recorded)
    return checks


def _unrecorded_local(ns_dir: Path, recorded: Recorded) -> list[CaptureCheck]:
    """The pcaps in ``<ns dir>/captures`` whose capture.sealed is in none of the hot
    sessions verified: said to be not checked, never passed over in silence."""
    from .capture import scan_captures

    why = (
        "not checked: its capture.sealed is in no hot session verified (in an archived one, or not yet "
        "sealed): verify with --tiers ROOT --store URL"
    )
    return [
        CaptureCheck(capture_id=f.capture_id, where=f.path, verdict="unrecorded", detail=why)
        for f in scan_captures(ns_dir / layout.CAPTURES_DIR)
        if f.capture_id not in recorded.captures
    ]


def _file_lines(path: str) -> Callable[[], Iterable[bytes]]:
    return lambda: (line for _, line in iter_lines(Path(path)))


def _check_local(rec: CaptureRecord, ns_dir: Path) -> CaptureCheck:
    recorded_at = Path(rec.sealed.path)
    candidates = [recorded_at, layout.capture_path(ns_dir, rec.sealed.capture_id)]
    for path in candidates:
        try:
            # O_NOFOLLOW: a symlink put in a pcap's place is not the pcap.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            # A symlink put in the pcap's place is not the pcap; anything else was not checked.
            verdict = "capture_mismatch" if exc.errno == errno.ELOOP else "unreadable"
            return CaptureCheck(
                capture_id=rec.sealed.capture_id,
                where=str(path),
                verdict=verdict,
                detail=f"cannot be read as the pcap: {exc.strerror}",
                expected_bytes=rec.sealed.bytes,
                expected_sha256=rec.sealed.sha256,
                session=rec.session,
            )
        if (odd := _not_a_pcap(rec, path, fd)) is not None:
            return odd
        return check_bytes(rec, str(path), lambda fd=fd: os.fdopen(fd, "rb"))
    why = f"sealed in {rec.session} and never evicted, but not at {recorded_at}"
    return missing(rec, str(recorded_at), why)


def _not_a_pcap(rec: CaptureRecord, path: Path, fd: int) -> CaptureCheck | None:
    """A FIFO, socket, device or directory in the pcap's place is never read (a FIFO would
    block): the pcap is not there as sealed, a failure. Otherwise ``fd`` blocks again."""
    from .verify import not_regular

    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        os.set_blocking(fd, True)
        return None
    os.close(fd)
    what = "a directory" if stat.S_ISDIR(mode) else (not_regular(path) or "not a regular file")
    return CaptureCheck(
        capture_id=rec.sealed.capture_id,
        where=str(path),
        verdict="capture_mismatch",
        detail=f"{what} in the pcap's place, not read",
        expected_bytes=rec.sealed.bytes,
        expected_sha256=rec.sealed.sha256,
        session=rec.session,
    )
