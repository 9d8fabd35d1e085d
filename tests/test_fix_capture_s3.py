"""A capture the S3 store lost (moto over HTTP on 127.0.0.1): archive ships it again,
gc never evicts it as offloaded meanwhile. Real tcpdump via ``ledger demo``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import BUCKET

NS = "demo"
pytestmark = pytest.mark.skipif(
    not (shutil.which("tcpdump") and os.geteuid() == 0), reason="needs tcpdump on PATH and root to capture on lo"
)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_capture_lost_from_s3_is_uploaded_again_and_not_evicted_as_offloaded(s3, monkeypatch, tmp_path):
    from ledger.demo import run_demo

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint)  # for the ledger subprocesses too
    url = f"s3://{BUCKET}/fleet"
    result = run_demo(tmp_path / "dm", seconds=1.5, clients=4, seed=1, store_url=url)
    assert result.captures, result.capture_note
    client = s3.client()
    pcaps = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="fleet/demo/captures/")["Contents"]]
    assert len(pcaps) == 2  # the pcap and its sidecar
    for key in pcaps:
        client.delete_object(Bucket=BUCKET, Key=key)
    opts = ["--root", result.ledger_dir, "--namespace", NS, "--key-file", result.key_file, "--store", url]

    gc = cli("gc", "--dry-run", "--max-files", "0", *opts)
    assert gc.returncode == 0 and "NOT offloaded" in gc.stdout and "missing from" in gc.stdout, gc.stdout

    out = cli("archive", *opts)
    assert out.returncode == 0 and "1 capture(s)" in out.stderr, out.stderr
    back = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="fleet/demo/captures/")["Contents"])
    assert back == sorted(pcaps)

    gc = cli("gc", "--max-files", "0", *opts)
    assert gc.returncode == 0 and "NOT offloaded" not in gc.stdout and "offloaded)" in gc.stdout, gc.stdout
