"""Benchmark: `ledger verify` against coreutils sha256sum and one hashlib call.

Builds a session of N events (default 1,000,000, about 300 bytes a line) in a
temporary directory, then in one run times, over the same bytes:
  * `ledger verify` as a real subprocess (all cores), peak RSS from wait4();
  * coreutils `sha256sum` (the bar: ratio verify/sha256sum >= 1.0);
  * one hashlib.sha256 call over the whole file (the hashing floor);
  * `ledger verify` again with LEDGER_PURE_PYTHON=1 (the Python reference loop
    without the C helper), and on a 3-event session (the fixed start-up cost).
Each is run --repeat times and the best is kept (these machines are noisy).

    python tools/bench_verify.py [--events N] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.format import format_ts  # noqa: E402
from ledger.session import SessionBuilder  # noqa: E402

KEY = bytes(range(32))


def build(path: Path, events: int) -> int:
    b = SessionBuilder("bench", "20261123T000000.000000Z-bench", [KEY])
    t0 = 1_795_000_000.0
    out = bytearray(b.opened_line(format_ts(t0)))
    pad = "x" * 80  # about 300 bytes a line, as the issue asks
    with open(path, "wb") as f:
        for i in range(1, events - 1):
            if i % 1000 == 0:
                out += b.checkpoint_line(format_ts(t0 + i * 1e-3))
            else:
                data = b'{"cn":"client-%d","ip":"10.0.%d.%d","bytes":%d,"note":"%s"}' % (
                    i % 97,
                    i % 250,
                    i % 200,
                    i * 7,
                    pad.encode(),
                )
                out += b.line("conn.anomaly", data, format_ts(t0 + i * 1e-3))
            if len(out) > 1 << 22:
                f.write(out)
                out.clear()
        out += b.seal_line(format_ts(t0 + events * 1e-3), "closed", 0)
        f.write(out)
    return path.stat().st_size


def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int]:
    """(seconds, peak RSS bytes, exit code) of a subprocess."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    return time.perf_counter() - t, ru.ru_maxrss * 1024, os.waitstatus_to_exitcode(status)


_FLOOR = """
import hashlib, sys, time
data = open(sys.argv[1], "rb").read()
t = time.perf_counter()
hashlib.sha256(data).digest()
print(time.perf_counter() - t)
"""


def hashlib_floor(path: Path) -> float:
    # In a child process: reading the file here would raise this process's peak RSS,
    # which Linux passes on to every child started after it (ru_maxrss survives exec).
    out = subprocess.run([sys.executable, "-c", _FLOOR, str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def _sha_impl() -> str:
    try:
        from ledger import _speedups
    except ImportError:
        return "none (helper not built)"
    return _speedups.SHA256_IMPL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="build the session here and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_verify."))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "session.ndjson"
    t = time.perf_counter()
    size = build(path, args.events)
    print(
        f"built {args.events:,} events, {size / 1e6:.1f} MB ({size / args.events:.0f} B/line) in {time.perf_counter() - t:.1f}s"
    )
    ledger = shutil.which("ledger") or f"{sys.executable} -m ledger.cli"
    key_file = work / "bench.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    verify_cmd = [*ledger.split(), "verify", "--key-file", str(key_file), str(path)]
    tiny = work / "tiny.ndjson"
    build(tiny, 3)
    pure = {**os.environ, "LEDGER_PURE_PYTHON": "1"}
    runs = [
        ("ledger verify", verify_cmd, None),
        ("sha256sum", ["sha256sum", str(path)], None),
        ("verify, no C", verify_cmd, pure),
        ("verify 3 events", [*verify_cmd[:-1], str(tiny)], None),
    ]
    rows = {}
    for _ in range(args.repeat):
        for name, cmd, env in runs:
            secs, rss, code = run_timed(cmd, env)
            if code != 0:
                sys.exit(f"{name} exited {code}")
            best = rows.get(name)
            if best is None or secs < best[0]:
                rows[name] = (secs, rss)
        floor = hashlib_floor(path)
        if "hashlib.sha256" not in rows or floor < rows["hashlib.sha256"][0]:
            rows["hashlib.sha256"] = (floor, 0)
    print(f"{'':16} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12}")
    for name, (secs, rss) in rows.items():
        rate = float("nan") if name == "verify 3 events" else size / secs / 1e6
        print(f"{name:16} {secs:8.2f} {rate:8.0f} {rss / 2**20 if rss else float('nan'):12.1f}")
    v, s, h = rows["ledger verify"][0], rows["sha256sum"][0], rows["hashlib.sha256"][0]
    print(f"ratio verify/sha256sum throughput: {s / v:.2f}  (target >= 1.0)")
    print(f"ratio verify/hashlib floor:        {h / v:.2f}")
    print(f"C helper speed-up over the Python loop: {rows['verify, no C'][0] / v:.1f}x")
    print(f"fixed start-up (3-event session): {rows['verify 3 events'][0]:.2f} s; SHA-256 in the helper: {_sha_impl()}")
    print(f"verify peak RSS: {rows['ledger verify'][1] / 2**20:.1f} MB (target <= 100 MB)")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
