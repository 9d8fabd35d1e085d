"""Parallel verification: one large file in chunks, many small files at once.

A file is split at line boundaries and its chunks scanned at the same time (the chain
check needs only the previous line's stored chain value, so chunks are independent):
in threads when the C helper is built (it lets go of the GIL), else in worker
processes. Many small files go to worker processes one file each.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from . import scan
from .policy import Policy
from .report import FileReport
from .scan import _Chunk, scan_chunk

# Files below this are checked in one pass: starting workers costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 2**20


def _boundaries(path: str, size: int, parts: int) -> list[tuple[int, int]]:
    """Split [0, size) into ``parts`` ranges that start just after an LF."""
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, parts):
            target = max(size * i // parts, cuts[-1])
            f.seek(target)
            while True:
                block = f.read(65536)
                if not block:
                    target = size
                    break
                nl = block.find(b"\n")
                if nl >= 0:
                    target += nl + 1
                    break
                target += len(block)
            if target >= size:
                break
            cuts.append(target)
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


_stop_event = None  # in a worker process: set by the parent once the answer is known


def _init_worker(stop) -> None:
    global _stop_event
    _stop_event = stop


def _scan_args(args: tuple[str, int, int]) -> _Chunk:
    if _stop_event is not None and _stop_event.is_set():
        return _Chunk()  # the parent stopped reading: skip the work
    return scan_chunk(*args, stop=_stop_event)


def _scan_file(path: str, size: int, jobs: int) -> Iterable[_Chunk]:
    if jobs <= 0:
        jobs = os.cpu_count() or 1
    if jobs == 1 or size < PARALLEL_MIN_BYTES:
        yield scan_chunk(path, 0, size)
        return
    # More chunks than workers so a bad line early in the file stops work early.
    bounds = _boundaries(path, size, jobs * 4)
    if scan._speedups is not None:  # read at each call: the tests switch the helper off
        yield from _scan_in_threads(path, bounds, jobs)
    else:
        yield from _scan_in_processes(path, bounds, jobs)


def _scan_in_threads(path: str, bounds: list[tuple[int, int]], jobs: int) -> Iterable[_Chunk]:
    # The C helper lets go of the GIL while it scans a block, so threads share the
    # work with no fork and no pickling of results; Python runs only for the few
    # lines the helper hands back.
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(jobs, thread_name_prefix="ledger-verify") as pool:
        futures = [pool.submit(scan_chunk, path, a, b, stop) for a, b in bounds]
        try:
            for future in futures:
                yield future.result()
        finally:
            stop.set()
            for future in futures:
                future.cancel()


def _scan_in_processes(path: str, bounds: list[tuple[int, int]], jobs: int) -> Iterable[_Chunk]:
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(stop,))
    try:
        yield from pool.imap(_scan_args, [(path, a, b) for a, b in bounds])
    finally:
        # Never terminate(): a worker killed while putting its result holds the result
        # queue's lock and the pool hangs. Ask the rest to skip, then let them finish.
        stop.set()
        pool.close()
        pool.join()


def _verify_many(
    paths: list[Path], policy: Policy, jobs: int, verify_file: Callable[[Path, Policy, int], FileReport]
) -> Iterable[FileReport]:
    """Reports in order. Many small files go to worker processes one file each; a large
    file is split into chunks by ``verify_file`` itself (passed in: it sits above this
    module). ``jobs``: worker processes, 0 = one per core, 1 = in-process."""
    workers = jobs if jobs > 0 else (os.cpu_count() or 1)
    small = [p for p in paths if _size(p) < PARALLEL_MIN_BYTES]
    if workers == 1 or len(small) < 2 or sum(map(_size, small)) < PARALLEL_MIN_BYTES:
        return (verify_file(p, policy, jobs) for p in paths)
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(workers)
    # One file per worker, checked in-process there, with every trusted key kind.
    pending = {p: pool.apply_async(verify_file, (p, policy, 1)) for p in small}
    pool.close()

    def ordered() -> Iterable[FileReport]:
        try:
            for p in paths:
                yield pending[p].get() if p in pending else verify_file(p, policy, jobs)
        finally:
            pool.join()  # every task was queued and closed over: never terminate() mid-put

    return ordered()


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0
