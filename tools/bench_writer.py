"""Benchmark: the embedded writer against stdlib logging and the naive design.

One run, same machine, same ~200-byte payloads, 8 producer threads:
  (a) ledger.Ledger, durability="batch" (group commit, one fsync per <= 20 ms);
  (b) stdlib logging: QueueHandler + QueueListener + FileHandler, json.dumps lines;
  (c) naive: a lock, json.dumps, write and flush in the producer thread.
Prints events/s for each, the ratios a/b and a/c, and record() latency p50/p99/max
for (a) and (c). Then again with fsync slowed by 50 ms: (a) with ledger's fsync
slowed, (c) calling the same slowed fsync after each write (what a durable naive
logger must do; fewer events, or it would take hours).

    python tools/bench_writer.py [--events 1000000] [--threads 8]

The writer's queue is sized to hold the whole run in the throughput part so (a)
counts written events, not drops; drops are printed anyway.
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ledger.writer as writer_mod  # noqa: E402
from ledger import Ledger  # noqa: E402

KEY = bytes(range(32))
PAYLOAD = {"cn": "client-0042", "ip": "10.20.30.40", "port": 51234, "bytes": 123456, "note": "x" * 110}


def _producers(threads: int, per_thread: int, call) -> tuple[float, list[int]]:
    """Run ``call(i)`` per_thread times in each thread; (seconds, latencies ns)."""
    lat: list[list[int]] = [[0] * per_thread for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def run(t: int) -> None:
        mine = lat[t]
        clock = time.perf_counter_ns
        start.wait()
        for i in range(per_thread):
            t0 = clock()
            call(i)
            mine[i] = clock() - t0

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0, [x for row in lat for x in row]


def bench_ledger(work: Path, threads: int, per_thread: int, queue_size: int) -> tuple[float, list[int], dict]:
    led = Ledger.open(work / "ledger", namespace="bench", hmac_key=KEY, queue_size=queue_size, durability="batch")
    t0 = time.perf_counter()
    _, lat = _producers(threads, per_thread, lambda i: led.record("conn.anomaly", PAYLOAD))
    led.flush()
    secs = time.perf_counter() - t0
    led.close()
    return secs, lat, dict(led.dropped)


def bench_logging(work: Path, threads: int, per_thread: int) -> float:
    q: queue.SimpleQueue = queue.SimpleQueue()
    fh = logging.FileHandler(work / "logging.ndjson")
    fh.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(q, fh)
    log = logging.getLogger("bench.logging")
    log.propagate = False
    log.handlers = [logging.handlers.QueueHandler(q)]
    log.setLevel(logging.INFO)
    listener.start()
    t0 = time.perf_counter()
    _producers(threads, per_thread, lambda i: log.info(json.dumps({"kind": "conn.anomaly", "data": PAYLOAD})))
    listener.stop()  # drains the queue
    fh.close()
    return time.perf_counter() - t0


def bench_naive(work: Path, threads: int, per_thread: int, fsync=None) -> tuple[float, list[int]]:
    lock = threading.Lock()
    f = open(work / "naive.ndjson", "a")  # noqa: SIM115

    def call(i: int) -> None:
        with lock:
            f.write(json.dumps({"ts": time.time(), "kind": "conn.anomaly", "data": PAYLOAD}) + "\n")
            f.flush()
            if fsync:
                fsync(f.fileno())

    secs, lat = _producers(threads, per_thread, call)
    f.close()
    return secs, lat


def pct(lat: list[int], p: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(len(s) * p))] / 1000


def lat_row(name: str, lat: list[int]) -> str:
    return f"{name:28} p50 {pct(lat, 0.5):8.1f} us   p99 {pct(lat, 0.99):8.1f} us   max {max(lat) / 1000:10.1f} us"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    per = args.events // args.threads
    n = per * args.threads
    work = Path(tempfile.mkdtemp(prefix="bench_writer."))
    try:
        a, lat_a, drops_a = bench_ledger(work, args.threads, per, queue_size=n + 1)
        b = bench_logging(work, args.threads, per)
        c, lat_c = bench_naive(work, args.threads, per)
        print(f"{n:,} events, {args.threads} producer threads, payload {len(json.dumps(PAYLOAD))} bytes")
        print(f"(a) ledger batch      {n / a:12,.0f} events/s   drops {sum(drops_a.values())}")
        print(f"(b) logging queue     {n / b:12,.0f} events/s")
        print(f"(c) naive lock+write  {n / c:12,.0f} events/s")
        print(f"ratio a/b {b / a:.2f} (target >= 5)   ratio a/c {c / a:.2f}")
        print(lat_row("(a) record()", lat_a))
        print(lat_row("(c) naive call", lat_c))

        # With the disk slowed: fsync takes 50 ms more.
        real_fsync = os.fsync

        def slow_fsync(fd: int) -> None:
            time.sleep(0.05)
            real_fsync(fd)

        writer_mod._fsync = slow_fsync
        shutil.rmtree(work / "ledger")
        per_slow = min(per, 25_000)
        a2, lat_a2, drops_a2 = bench_ledger(work, args.threads, per_slow, queue_size=16384)
        writer_mod._fsync = real_fsync
        per_naive = 10
        c2, lat_c2 = bench_naive(work, args.threads, per_naive, fsync=slow_fsync)
        print(f"fsync slowed by 50 ms: (a) {args.threads}x{per_slow:,} events, (c) {args.threads}x{per_naive}")
        print(lat_row("(a) record(), slow disk", lat_a2) + f"   drops {drops_a2}")
        print(lat_row("(c) naive+fsync, slow disk", lat_c2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
