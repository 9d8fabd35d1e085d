"""Verify session files: parse, then check, then report (SPEC.md section 5).

Layering, as in sigstore-python, one module a layer:

1. ``scan``: ``scan_chunk`` parses a byte range of one file line by line and checks
   what a line can prove with its predecessor alone: shape, UTF-8, seq, chain. The
   reference loop is Python; the optional C helper takes the runs of plain lines.
2. ``filecheck``: walks the scanned chunks in order: seq continuity across chunks,
   every checkpoint's size, root, chain and signatures, the seal being last, the
   policy on unsealed files. ``parallel`` splits a large file at line boundaries and
   scans its chunks at once (the chain check needs only the previous line's stored
   chain value, so chunks are independent), and checks many small files at once.
3. ``directory``: ``prev`` links between the sessions of a namespace and the writer's
   ``.last-seal.json``. ``verify_path`` (here) runs all three and returns a
   ``VerifyReport``; the CLI renders it. Nothing here prints.

``incremental`` holds the same checks fed line by line (``ledger tail --verify``).
``Policy`` (``policy``) says what must hold; the reports are in ``report``.

A file still being written is read up to the size it had when its check began.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from .. import format as fmt
from ..capture_verify import verify_local_captures
from ..errors import InputError

# Each name below is also imported from ledger.verify by other modules and the tests
# (``x as x``: the private ones, re-exported for them). A module reads its own globals:
# patch BLOCK_SIZE and _speedups in ledger.verify.scan, PARALLEL_MIN_BYTES and
# scan_chunk in ledger.verify.parallel, not here.
from .directory import check_last_seal, check_prev_links, prev_link, session_files
from .filecheck import _FileCheck
from .incremental import IncrementalCheck
from .inputs import GZIP_MAGIC, _CountingReader, _open_regular, _Prefixed, not_regular
from .parallel import PARALLEL_MIN_BYTES, _scan_file, _verify_many
from .parallel import _boundaries as _boundaries
from .policy import Policy
from .report import FileReport, FirstError, VerifyReport
from .scan import BLOCK_SIZE, _Chunk, _finish, _Scan, _scan_blocks, decompose, parse_header, scan_chunk
from .scan import _scan_lines as _scan_lines
from .scan import _Special as _Special
from .scan import _speedups as _speedups

__all__ = [
    "BLOCK_SIZE",
    "GZIP_MAGIC",
    "PARALLEL_MIN_BYTES",
    "FileReport",
    "FirstError",
    "IncrementalCheck",
    "Policy",
    "VerifyReport",
    "check_last_seal",
    "check_prev_links",
    "decompose",
    "not_regular",
    "parse_header",
    "prev_link",
    "scan_chunk",
    "session_files",
    "verify_file",
    "verify_gzip",
    "verify_path",
    "verify_reader",
    "verify_stream",
]

_DEFAULT = Policy()  # trusts no key, wants every file sealed


def verify_file(path: str | os.PathLike[str], policy: Policy = _DEFAULT, jobs: int | None = None) -> FileReport:
    """Verify one session file up to the size it has now; a gzip-compressed one (by its
    magic bytes) decompressed, streamed. Raises InputError if unreadable or not a regular
    file (a FIFO, socket or device is refused, never waited on).

    ``jobs``: workers for a large file, 0 = one per core, 1 = in-process; None takes
    ``policy.jobs`` (kept until every caller passes ``jobs`` here)."""
    p = os.fspath(path)
    with _open_regular(p) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            magic = f.read(2)
            if magic == GZIP_MAGIC:
                f.seek(0)
                return verify_gzip(f, p, policy)
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}") from None
    check = _FileCheck(p, policy)
    try:
        for chunk in _scan_file(p, size, _jobs(jobs, policy)):
            if not check.chunk(chunk):
                break
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror}") from None
    return check.finish(size)


def verify_path(
    paths: Sequence[str | os.PathLike[str]], policy: Policy = _DEFAULT, jobs: int | None = None
) -> VerifyReport:
    """Verify files and directories (every namespace below a directory, in order).

    ``jobs``: worker processes, 0 = one per core, 1 = in-process; None takes
    ``policy.jobs`` (kept until every caller passes ``jobs`` here)."""
    if not paths:
        raise InputError("nothing to verify")
    groups: list[list[Path]] = []  # one list per namespace directory (prev links), or a lone file
    ns_dirs: list[Path | None] = []  # the namespace directory of each group found in one
    notes: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = session_files(p)
            for group in found.values():
                for f in [f for f in group if not_regular(f)]:
                    notes.append(f"skipped {f}: {not_regular(f)}, not a session file")
                    group.remove(f)
            found = {d: g for d, g in found.items() if g}
            if not found:
                raise InputError(f"{p}: no session files (*.ndjson) found")
            groups.extend(found.values())
            ns_dirs.extend(found)
        elif what := not_regular(p):
            raise InputError(f"{p}: {what}, not a session file; refusing to read it")
        elif p.exists():
            groups.append([p])
            ns_dirs.append(None)
        else:
            raise InputError(f"{p}: no such file or directory")
    reports = iter(_verify_many([f for g in groups for f in g], policy, _jobs(jobs, policy), verify_file))
    files: list[FileReport] = []
    for group, ns_dir in zip(groups, ns_dirs, strict=True):
        done = [next(reports) for _ in group]
        check_prev_links(done)
        files.extend(done)
        if ns_dir is not None:
            files.extend(check_last_seal(ns_dir, done, policy))
    # Captures are evidence too: each pcap recorded below a directory, against its pointer.
    captures = verify_local_captures(files, [p for p in paths if Path(p).is_dir()])
    return VerifyReport(files, captures, notes)


def _jobs(jobs: int | None, policy: Policy) -> int:
    return policy.jobs if jobs is None else jobs


def verify_stream(stream, name: str, policy: Policy = _DEFAULT) -> FileReport:
    """Verify a session read from a stream (e.g. a gzip object in a cold store), in one pass.

    ``stream`` needs only ``read(n)``; memory stays flat whatever its size.
    """
    counted = _CountingReader(stream)
    out = _Chunk()
    st = _Scan(fmt.ZERO_CHAIN, True)
    _scan_blocks(counted, 0, None, st, out)
    _finish(st, out)
    check = _FileCheck(name, policy)
    check.chunk(out)
    return check.finish(counted.count)


def verify_gzip(raw, name: str, policy: Policy = _DEFAULT) -> FileReport:
    """A gzip-compressed session (an archived ``.ndjson.gz``), decompressed as it streams.
    A gzip that does not decompress is ``bad_gzip``: the archive is damaged."""
    try:
        report = verify_stream(gzip.GzipFile(fileobj=raw, mode="rb"), name, policy)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        return FileReport(path=name, first_error=FirstError(None, None, "bad_gzip", f"gzip does not decompress: {exc}"))
    report.notes.append("gzip-compressed: verified decompressed")
    return report


def verify_reader(stream, name: str, policy: Policy = _DEFAULT) -> FileReport:
    """A session from a stream that cannot seek (standard input), plain or gzip-compressed
    (told by its first two bytes), in one pass."""
    head = b""
    while len(head) < 2 and (more := stream.read(2 - len(head))):
        head += more
    src = _Prefixed(head, stream)
    return verify_gzip(src, name, policy) if head == GZIP_MAGIC else verify_stream(src, name, policy)
