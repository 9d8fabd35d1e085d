"""Benchmark: write-to-print latency of `ledger tail -f` against coreutils `tail -f`.

Writes N events (default 1,000) at a steady rate (default 200/s) to one session
file, one write() per line as the writer does (lines made by SessionBuilder, a
signed checkpoint every 100 events), and in the same run follows that file with:

  * `ledger tail -f -n 0 --json FILE`           (real subprocess, inotify)
  * coreutils `tail -f -n 0 FILE`               (the bar)
  * with --with-verify also `ledger tail -f -n 0 --json --verify FILE` (chain, seq,
    checkpoints checked per line); off by default: a third follower competes for
    the CPU with the two being compared (2 cores here).

An event's latency is the time its line is read from the follower's stdout pipe
minus the time just before its write(); one reader thread in this process
selects on all the pipes, so its own cost is the same for every follower.
Target (the issue): p99 of `ledger tail -f --json` at most 2x coreutils, and
under 100 ms.

    python tools/bench_tail.py [--events 1000] [--rate 200] [--with-verify] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.format import format_ts  # noqa: E402
from ledger.session import SessionBuilder  # noqa: E402

KEY = bytes(range(32))
SEQ = re.compile(rb'"seq":([0-9]+)')
WARMUP = 20


class Readers:
    """Timestamps the first arrival of each seq on each follower's stdout."""

    def __init__(self, procs: dict[str, subprocess.Popen]) -> None:
        self.arrived: dict[str, dict[int, float]] = {name: {} for name in procs}
        self._sel = selectors.DefaultSelector()
        self._carry: dict[str, bytes] = dict.fromkeys(procs, b"")
        for name, p in procs.items():
            os.set_blocking(p.stdout.fileno(), False)
            self._sel.register(p.stdout.fileno(), selectors.EVENT_READ, name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        clock = time.perf_counter
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.1):
                now = clock()
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    self._sel.unregister(key.fd)
                    continue
                name = key.data
                parts = (self._carry[name] + chunk).split(b"\n")
                self._carry[name] = parts.pop()
                seen = self.arrived[name]
                for line in parts:
                    m = SEQ.search(line)
                    if m:
                        seen.setdefault(int(m[1]), now)

    def wait_for(self, seq: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(seq in seen for seen in self.arrived.values()):
                return True
            time.sleep(0.005)
        return False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    ap.add_argument("--with-verify", action="store_true", help="also follow with --verify")
    ap.add_argument("--keep", type=Path, help="keep the session file in this directory")
    args = ap.parse_args()
    if shutil.which("tail") is None:
        print("coreutils tail not found", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    ns = (args.keep or work) / "bench"
    ns.mkdir(parents=True, exist_ok=True)
    session = "20261123T000000.000000Z-bench"
    path = ns / f"{session}.ndjson"
    builder = SessionBuilder("bench", session, [KEY])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.write(fd, builder.opened_line(format_ts()))

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LEDGER_TAIL_POLL", None)
    ledger = [sys.executable, "-m", "ledger.cli", "tail", "-f", "-n", "0", "--json"]
    commands = {"ledger tail -f --json": [*ledger, str(path)]}
    if args.with_verify:
        commands["ledger tail -f --json --verify"] = [*ledger, "--verify", str(path)]
    commands["coreutils tail -f"] = ["tail", "-f", "-n", "0", str(path)]
    procs = {
        name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=repo)
        for name, cmd in commands.items()
    }
    readers = Readers(procs)
    written: dict[int, float] = {}
    pad = b"x" * 120

    def write_event(i: int) -> None:
        if builder.size % 100 == 0:
            line = builder.checkpoint_line(format_ts())
        else:
            data = b'{"i":%d,"cn":"client-%d","ip":"10.0.%d.%d","note":"%s"}' % (i, i % 97, i % 250, i % 200, pad)
            line = builder.line("capture.sealed", data, format_ts())
        seq = builder.size - 1
        written[seq] = time.perf_counter()
        os.write(fd, line)

    try:
        time.sleep(0.8)  # let the followers start; then warm up until each prints
        for i in range(WARMUP):
            write_event(i)
            time.sleep(0.02)
        if not readers.wait_for(builder.size - 1, 20):
            late = [n for n, seen in readers.arrived.items() if builder.size - 1 not in seen]
            print(f"followers did not start: {', '.join(late)}", file=sys.stderr)
            return 2
        first = builder.size
        period = 1.0 / args.rate
        t0 = time.perf_counter()
        for k in range(args.events):
            target = t0 + k * period
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            write_event(WARMUP + k)
        last = builder.size - 1
        complete = readers.wait_for(last, 10)
        elapsed = time.perf_counter() - t0
    finally:
        readers.stop()
        os.close(fd)
        for p in procs.values():
            p.terminate()
        for name, p in procs.items():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            err = p.stderr.read().decode("utf-8", "replace").strip()
            if p.returncode not in (0, -15) and err:  # -15: our SIGTERM
                print(f"{name} exited {p.returncode}: {err}", file=sys.stderr)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.events} events at {args.rate:g}/s ({elapsed:.1f} s), one write() each; latency write -> read from stdout"
    )
    print(f"{'follower':32} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'missing':>8}")
    stats = {}
    for name, seen in readers.arrived.items():
        lat = sorted((seen[s] - written[s]) * 1e3 for s in range(first, last + 1) if s in seen)
        missing = (last + 1 - first) - len(lat)
        stats[name] = (percentile(lat, 0.5), percentile(lat, 0.99), lat[-1] if lat else float("nan"), missing)
        p50, p99, worst, missing = stats[name]
        print(f"{name:32} {p50:8.3f} {p99:8.3f} {worst:8.3f} {missing:8d}")
    ours, bar = stats["ledger tail -f --json"], stats["coreutils tail -f"]
    ratio = ours[1] / bar[1] if bar[1] > 0 else float("inf")
    ratio50 = ours[0] / bar[0] if bar[0] > 0 else float("inf")
    ok = complete and ours[3] == 0 and ratio <= 2.0 and ours[1] < 100.0
    print(f"ratio ledger/coreutils: p50 {ratio50:.2f}x, p99 {ratio:.2f}x (target p99 <= 2x and < 100 ms): ", end="")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
