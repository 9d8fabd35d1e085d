"""Benchmark: rebuilding the LMDB views against the bare verify pass, same files, one run.

Builds a namespace of N events (default 1,000,000) spread over sessions of 100,000
lines, one event in ten a capture event (started/sealed/evicted) and the rest
connection events, then times:
  * Projector.rebuild() (drop and replay every view);
  * verify_path() over the same files, in-process on one core and on every core.
Target: rebuild at least half the speed of verify.

    python tools/bench_projections.py [--events 1000000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger import events as ev  # noqa: E402
from ledger.format import format_ts  # noqa: E402
from ledger.projections import Projector  # noqa: E402
from ledger.session import SessionBuilder  # noqa: E402
from ledger.verify import Policy, verify_path  # noqa: E402

KEY = bytes(range(32))
PER_SESSION = 100_000


def build(ns_dir: Path, events: int) -> int:
    ns_dir.mkdir(parents=True)
    enc = msgspec.json.encode
    t0 = 1_795_000_000.0
    written = 0
    prev = None
    s = 0
    while written < events:
        sid = f"20261123T{s // 3600:02d}{s // 60 % 60:02d}{s % 60:02d}.000000Z-bench"
        b = SessionBuilder("bench", sid, [KEY], prev)
        out = [b.opened_line(format_ts(t0))]
        n = min(PER_SESSION, events - written)
        for i in range(1, n - 1):
            ts = format_ts(t0 + (written + i) * 1e-3)
            if i % 1000 == 0:
                out.append(b.checkpoint_line(ts))
            elif i % 10 == 0:
                cid = f"c{written + i:09d}"
                k = (i // 10) % 3
                if k == 0:
                    e = ev.CaptureStarted(
                        capture_id=cid,
                        cn="alice",
                        ip="10.0.0.1",
                        reason="anomaly",
                        severity="high",
                        path=f"/caps/{cid}.pcap",
                        interface="lo",
                        duration_s=5.0,
                        snaplen=262144,
                    )
                elif k == 1:
                    e = ev.CaptureSealed(
                        capture_id=f"c{written + i - 10:09d}",
                        cn="alice",
                        ip="10.0.0.1",
                        reason="anomaly",
                        path=f"/caps/{cid}.pcap",
                        bytes=12345,
                        sha256="ab" * 32,
                        started_at=ts,
                        duration_ms=5000,
                    )
                else:
                    e = ev.CaptureEvicted(
                        capture_id=f"c{written + i - 20:09d}",
                        path=f"/caps/{cid}.pcap",
                        bytes=12345,
                        reason="max_files",
                        offloaded=False,
                    )
                out.append(b.line(ev.kind_of(e), enc(e), ts))
            else:
                out.append(
                    b.line(
                        "conn.closed",
                        b'{"cn":"client-%d","ip":"10.0.%d.%d","bytes_up":%d,"bytes_down":%d}'
                        % (i % 97, i % 250, i % 200, i * 7, i * 13),
                        ts,
                    )
                )
        out.append(b.seal_line(format_ts(t0 + (written + n) * 1e-3), "rotated", 0))
        (ns_dir / f"{sid}.ndjson").write_bytes(b"".join(out))
        prev = b.summary()
        written += n
        s += 1
    return sum(p.stat().st_size for p in ns_dir.glob("*.ndjson"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_proj."))
    try:
        size = build(work / "bench", args.events)
        print(f"{args.events:,} events, {size / 1e6:.0f} MB in {len(list((work / 'bench').glob('*.ndjson')))} sessions")
        rows = {}
        with Projector(work, "bench", map_size=4 << 30) as p:
            t = time.perf_counter()
            r = p.rebuild()
            rows["projections rebuild"] = time.perf_counter() - t
            captures = len(p.captures())
        for jobs in (1, 0):
            t = time.perf_counter()
            report = verify_path([work / "bench"], Policy(keys=(KEY,), jobs=jobs))
            rows[f"verify ({'1 core' if jobs == 1 else 'all cores'})"] = time.perf_counter() - t
            assert report.ok, report.as_dict()
        print(f"rebuild applied {r.applied:,} events, {captures:,} captures in the pointer view")
        for name, secs in rows.items():
            print(f"{name:22} {secs:7.2f} s  {args.events / secs:12,.0f} events/s")
        rb = rows["projections rebuild"]
        for name in [k for k in rows if k.startswith("verify")]:
            print(f"rebuild speed / {name} speed: {rows[name] / rb:.2f} (target >= 0.5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
