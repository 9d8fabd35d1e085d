"""Benchmark: archiving sealed sessions to S3 against a plain boto3 upload of the same bytes.

Builds --mb MB (default 200) of sealed, chained sessions of --session-mb MB each with
SessionBuilder, starts moto's S3 server in this process on 127.0.0.1 (a free port),
then times in one run, over the same files:
  * boto3 ``upload_file`` of the raw ``.ndjson`` files to the prefix ``raw/`` (the bar);
  * ``Archiver.run_once()`` with hot retention 0: verify, gzip, sign the manifest, PUT
    gzip, sidecar and manifest with If-None-Match and SHA-256, HEAD-confirm, record
    ``archive.batch``, confirm again, record ``archive.local_deleted``, unlink.
MB/s is raw session bytes over seconds for both. Target: archive/upload ratio >= 0.8
(signing, confirming and recording cost under 20%). A breakdown of the archive pass
(wall time inside each step, by wrapping the archiver's and store's methods) follows.

    python tools/bench_cold.py [--mb 200] [--session-mb 16] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ledger.writer as writer_mod  # noqa: E402
from ledger import Ledger  # noqa: E402
from ledger.cold.archive import Archiver  # noqa: E402
from ledger.cold.stores import StoreOptions, open_store  # noqa: E402
from ledger.format import format_ts  # noqa: E402
from ledger.session import SessionBuilder  # noqa: E402

KEY = bytes(range(32))
NS = "bench"
BUCKET = "ledger-bench"
MB = 1_000_000


def build(ns_dir: Path, total_bytes: int, session_bytes: int, with_seal_records: bool = True) -> list[Path]:
    """Chained sealed sessions of about ``session_bytes`` each, ``total_bytes`` in all."""
    ns_dir.mkdir(parents=True)
    t0 = 1_767_225_600.0  # 2026-01-01: older than the host session the archiver records into
    pad = b"x" * 140
    prev = None
    paths: list[Path] = []
    written = 0
    n = 0
    while written < total_bytes:
        sid = f"20260101T00{n // 60:02d}{n % 60:02d}.000000Z-bench"
        b = SessionBuilder(NS, sid, [KEY], prev)
        path = ns_dir / f"{sid}.ndjson"
        size = 0
        i = 0
        sha = hashlib.sha256()
        with open(path, "wb") as f:
            out = bytearray(b.opened_line(format_ts(t0 + n)))
            target = min(session_bytes, total_bytes - written)
            while size + len(out) < target:
                i += 1
                ts = format_ts(t0 + n + i * 1e-6)
                if i % 1000 == 0:
                    out += b.checkpoint_line(ts)
                else:
                    data = b'{"cn":"client-%d","ip":"10.0.%d.%d","bytes":%d,"note":"%s"}' % (
                        i % 97,
                        i % 250,
                        i % 200,
                        i * 7,
                        pad,
                    )
                    out += b.line("conn.anomaly", data, ts)
                if len(out) > 1 << 22:
                    f.write(out)
                    sha.update(out)
                    size += len(out)
                    out.clear()
            out += b.seal_line(format_ts(t0 + n + (i + 1) * 1e-6), "closed", 0)
            f.write(out)
            sha.update(out)
            size += len(out)
        if with_seal_records:
            # What the writer leaves at every seal (ledger.writer.SealRecord): the archiver
            # checks the bytes against it instead of re-verifying the session.
            writer_mod._write_seal_record(ns_dir, b.summary(), size, sha.hexdigest())
        prev = b.summary()
        paths.append(path)
        written += size
        n += 1
    return paths


class Timings:
    """Wall time spent inside wrapped methods of one object each (instance attributes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, obj: object, method: str, label=None) -> None:
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            name = label(*args) if label else method
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(obj, method, timed)


def _put_label(key, *_args) -> str:
    return "PUT checkpoint notes" if "/checkpoints/" in key else "PUT session objects"


def start_moto():
    """moto's S3 on 127.0.0.1:<free port>, with throwaway credentials (none of the machine's)."""
    from moto.server import ThreadedMotoServer

    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(var, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200, help="MB of sealed sessions (default 200)")
    ap.add_argument("--session-mb", type=float, default=16, help="size of one session (default 16)")
    ap.add_argument("--keep", type=Path, help="work here and keep the files")
    ap.add_argument(
        "--no-seal-records",
        action="store_true",
        help="sessions without the writer's seal records (archive verifies every session with the key either way)",
    )
    args = ap.parse_args()

    import boto3

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_cold."))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "root"
    t = time.perf_counter()
    paths = build(root / NS, int(args.mb * MB), int(args.session_mb * MB), not args.no_seal_records)
    raw = sum(p.stat().st_size for p in paths)
    print(f"built {len(paths)} sealed sessions, {raw / MB:.1f} MB, in {time.perf_counter() - t:.1f}s")

    server, endpoint = start_moto()
    try:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)

        t = time.perf_counter()
        for p in paths:
            client.upload_file(str(p), BUCKET, f"raw/{p.name}")
        upload_s = time.perf_counter() - t

        store = open_store(f"s3://{BUCKET}/cold", StoreOptions(endpoint_url=endpoint))
        with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
            # As `ledger archive` runs it: verifier worker processes on every core.
            archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0, jobs=0)
            # A live host ships each checkpoint as it is written, long before the session
            # is archived; these sessions were built at once, so ship them first, apart.
            t = time.perf_counter()
            shipped = archiver.upload_checkpoints([])
            checkpoints_s = time.perf_counter() - t
            # Likewise its views are current: the first catch-up replays every event once.
            t = time.perf_counter()
            archiver.projector.catch_up()
            catch_up_s = time.perf_counter() - t
            steps = Timings()
            steps.wrap(archiver, "_verify_and_gzip", lambda *a: "verify (key) + sha256 + gzip")
            steps.wrap(store, "put", _put_label)
            steps.wrap(store, "head", lambda *a: "HEAD confirm")
            steps.wrap(archiver.recorder, "record", lambda *a: "record + flush events")
            try:
                t = time.perf_counter()
                report = archiver.run_once()
                archive_s = time.perf_counter() - t
            finally:
                archiver.close()
        if report.errors or len(report.batches) != len(paths) or len(report.local_deleted) != len(paths):
            sys.exit(f"archive pass incomplete: {len(report.batches)} batches, errors {report.errors}")
        gz = sum(o.bytes for b in report.batches for o in b.objects if o.key.endswith(".ndjson.gz"))
    finally:
        server.stop()

    up_rate, ar_rate = raw / upload_s / MB, raw / archive_s / MB
    print(f"{'':28} {'seconds':>8} {'MB/s':>8}")
    print(f"{'boto3 upload_file (raw)':28} {upload_s:8.2f} {up_rate:8.1f}")
    print(f"{'Archiver.run_once':28} {archive_s:8.2f} {ar_rate:8.1f}")
    print(f"gzip uploaded by the archiver: {gz / MB:.1f} MB ({raw / gz:.1f}x smaller than the raw sessions)")
    print(f"ratio archive/upload throughput: {ar_rate / up_rate:.2f}  (target >= 0.8)")
    print(f"before the timed pass, as on a live host: {shipped} checkpoint notes shipped in {checkpoints_s:.2f}s;")
    print(f"  views caught up with every event in {catch_up_s:.2f}s")
    print("archive pass breakdown:")
    for name, secs in sorted(steps.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34} {secs:6.2f}s {100 * secs / archive_s:5.1f}%  ({steps.calls[name]} calls)")
    rest = archive_s - sum(steps.seconds.values())
    print(f"  {'other (projection, unlink, ...)':34} {rest:6.2f}s {100 * rest / archive_s:5.1f}%")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
