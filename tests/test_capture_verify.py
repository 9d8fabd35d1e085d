"""Captures are evidence too (issue 11 item 2): ``ledger verify`` checks every pcap the
ledger recorded against the size and sha256 of its ``capture.sealed`` event.

Everything is real: the pcaps are written by the real tcpdump on ``lo`` under real UDP
traffic (skipped, saying why, without tcpdump or root), the events by ``Ledger``, the
cold tier is a ``file://`` directory or moto's S3 server over HTTP on 127.0.0.1, and
``ledger verify`` runs as a subprocess, as an operator runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ledger import Ledger
from ledger import keys as keymod
from ledger.capture import CaptureManager, CaptureOptions, default_capture_dir, gc_captures
from ledger.cold.archive import Archiver
from ledger.cold.manifest import capture_keys, sha256_sidecar
from ledger.cold.stores import StoreOptions, open_store
from ledger.verify import Policy, verify_path

NS = "edge-1"
BUCKET = "ledger-cold"
PREFIX = "fleet"
TCPDUMP = shutil.which("tcpdump")
pytestmark = pytest.mark.skipif(
    TCPDUMP is None or os.geteuid() != 0, reason="needs tcpdump on PATH and root to capture on lo"
)


# ---- helpers ------------------------------------------------------------------------------


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "hmac.key"
    keymod.write_key_file(path)
    return path


def ledger_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def verdicts(proc: subprocess.CompletedProcess) -> dict[str, str]:
    out = json.loads(proc.stdout)
    return {c["capture_id"]: c["verdict"] for c in out["captures"]}


def make_captures(root: Path, key: bytes, ips=("127.0.0.1", "127.0.0.2")) -> list:
    """One real 1 s capture per address, all at once, under UDP traffic to each; the
    capture session is sealed on close. Returns the capture.sealed events."""
    stop = threading.Event()
    rx = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in ips]
    for s, ip in zip(rx, ips, strict=True):
        s.bind((ip, 0))

    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            while not stop.is_set():
                for s in rx:
                    tx.sendto(os.urandom(64), s.getsockname())
                stop.wait(0.005)

    sender = threading.Thread(target=send)
    sender.start()
    opts = CaptureOptions(
        capture_dir=str(default_capture_dir(root, NS)), interface="lo", duration_s=1, snaplen=128, per_cn_cooldown_s=0
    )
    try:
        with Ledger.open(root, namespace=NS, hmac_key=key) as led, CaptureManager(led, opts) as m:
            ds = [m.maybe_capture(f"client-{i}", ip, "test", "high") for i, ip in enumerate(ips)]
            results = [d.wait(timeout=15) for d in ds]
    finally:
        stop.set()
        sender.join()
        for s in rx:
            s.close()
    assert all(r is not None and r.ok and r.outcome == "ok" for r in results), results
    return sorted((r.event for r in results), key=lambda e: e.capture_id)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # same size: only the sha256 can tell
    path.write_bytes(bytes(data))


# ---- the hot tier ---------------------------------------------------------------------------


def test_intact_captures_verify_and_json_lists_each_with_its_verdict(tmp_path, key_file):
    root = tmp_path / "hot"
    sealed = make_captures(root, keymod.load_key_file(key_file))
    proc = ledger_cli("verify", str(root), "--key-file", str(key_file), "--json")
    assert proc.returncode == 0, proc.stderr
    assert verdicts(proc) == {e.capture_id: "ok" for e in sealed}
    human = ledger_cli("verify", str(root), "--key-file", str(key_file))
    assert human.returncode == 0 and "2/2 captures intact" in human.stderr, human.stderr


def test_an_edited_local_pcap_fails_verify_dir_naming_it(tmp_path, key_file):
    root = tmp_path / "hot"
    sealed = make_captures(root, keymod.load_key_file(key_file))
    edited = Path(sealed[0].path)
    flip_a_byte(edited)
    proc = ledger_cli("verify", str(root), "--key-file", str(key_file))
    assert proc.returncode == 1, proc.stderr
    bad = [ln for ln in proc.stderr.splitlines() if "FAIL" in ln and sealed[0].capture_id in ln]
    assert bad and "capture_mismatch" in bad[0] and str(edited) in bad[0], proc.stderr
    as_json = ledger_cli("verify", str(root), "--key-file", str(key_file), "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["ok"] is False
    assert verdicts(as_json) == {sealed[0].capture_id: "capture_mismatch", sealed[1].capture_id: "ok"}
    # The library says the same, as typed results.
    report = verify_path([root], Policy(keys=(keymod.load_key_file(key_file),)))
    assert all(f.ok for f in report.files) and not report.ok
    check = next(c for c in report.captures if c.capture_id == sealed[0].capture_id)
    assert (check.expected_sha256, check.found_bytes) == (sealed[0].sha256, sealed[0].bytes)
    assert check.found_sha256 == hashlib.sha256(edited.read_bytes()).hexdigest()


def test_a_deleted_local_pcap_the_ledger_says_is_present_is_reported(tmp_path, key_file):
    root = tmp_path / "hot"
    key = keymod.load_key_file(key_file)
    sealed = make_captures(root, key)
    opts = CaptureOptions(capture_dir=str(default_capture_dir(root, NS)), max_files=1)
    with Ledger.open(root, namespace=NS, hmac_key=key) as led:  # an eviction the ledger records
        evicted = [e.capture_id for e in gc_captures(led, opts)]
    # Two captures made within one second may be evicted in either order: keep whichever stays.
    assert len(evicted) == 1 and evicted[0] in {e.capture_id for e in sealed}
    [kept] = [e for e in sealed if e.capture_id != evicted[0]]
    proc = ledger_cli("verify", str(root), "--key-file", str(key_file), "--json")
    assert proc.returncode == 0, proc.stderr
    assert verdicts(proc) == {kept.capture_id: "ok"}  # evicted on the record: not missing
    Path(kept.path).unlink()  # gone with no record
    proc = ledger_cli("verify", str(root), "--key-file", str(key_file), "--json")
    assert proc.returncode == 1
    assert verdicts(proc) == {kept.capture_id: "missing_capture"}
    human = ledger_cli("verify", str(root), "--key-file", str(key_file))
    assert human.returncode == 1 and f"capture {kept.capture_id}" in human.stderr
    assert "missing_capture" in human.stderr


def test_a_pcap_moved_with_its_root_is_found_and_checked(tmp_path, key_file):
    root = tmp_path / "hot"
    sealed = make_captures(root, keymod.load_key_file(key_file))
    moved = tmp_path / "moved"
    root.rename(moved)
    proc = ledger_cli("verify", str(moved), "--key-file", str(key_file), "--json")
    assert proc.returncode == 0, proc.stderr
    assert verdicts(proc) == {e.capture_id: "ok" for e in sealed}


# ---- the cold tier ---------------------------------------------------------------------------


@pytest.fixture(params=["file", "s3"])
def cold(request, tmp_path, monkeypatch):
    """(store, url, overwrite, delete): a real file:// directory, or moto over HTTP."""
    if request.param == "file":
        url = (tmp_path / "cold" / PREFIX).as_uri()
        store = open_store(url)
        return (
            store,
            url,
            lambda key, data: (store.root / key).write_bytes(data),
            lambda key: (store.root / key).unlink(),
        )
    moto = request.getfixturevalue("s3")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.endpoint)  # for the ledger subprocess too
    url = f"s3://{BUCKET}/{PREFIX}"
    client = moto.client()

    def overwrite(key: str, data: bytes) -> None:
        client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}", Body=data)

    def delete(key: str) -> None:
        client.delete_object(Bucket=BUCKET, Key=f"{PREFIX}/{key}")

    return open_store(url, StoreOptions()), url, overwrite, delete


def archive_pass(root: Path, store, key: bytes) -> None:
    with Ledger.open(root, namespace=NS, hmac_key=key) as host:
        archiver = Archiver(root, NS, store, host, [key], hot_retention_s=86400)
        try:
            report = archiver.run_once()
        finally:
            archiver.close()
    assert report.errors == [], report.errors


def test_an_edited_archived_pcap_with_a_recomputed_sidecar_fails_verify_store(tmp_path, key_file, cold):
    store, url, overwrite, _ = cold
    root = tmp_path / "hot"
    key = keymod.load_key_file(key_file)
    sealed = make_captures(root, key)
    archive_pass(root, store, key)
    proc = ledger_cli("verify", url, "--key-file", str(key_file), "--json")
    assert proc.returncode == 0, proc.stderr
    assert verdicts(proc) == {e.capture_id: "ok" for e in sealed}

    target = sealed[0]
    pcap_key, sidecar_key = capture_keys(NS, target.capture_id)
    data = bytearray(Path(target.path).read_bytes())
    data[-1] ^= 0x01
    overwrite(pcap_key, bytes(data))
    # The same hand rewrites the sidecar: it now vouches for the edit, and proves nothing.
    overwrite(sidecar_key, sha256_sidecar(hashlib.sha256(data).hexdigest(), pcap_key.rsplit("/", 1)[1]))
    proc = ledger_cli("verify", url, "--key-file", str(key_file), "--json")
    assert proc.returncode == 1, proc.stderr
    assert verdicts(proc) == {target.capture_id: "capture_mismatch", sealed[1].capture_id: "ok"}
    human = ledger_cli("verify", url, "--key-file", str(key_file))
    assert human.returncode == 1
    assert any(target.capture_id in ln and "capture_mismatch" in ln for ln in human.stderr.splitlines())


def test_a_shipped_pcap_missing_from_the_store_is_reported(tmp_path, key_file, cold):
    store, url, _, delete = cold
    root = tmp_path / "hot"
    key = keymod.load_key_file(key_file)
    sealed = make_captures(root, key)
    archive_pass(root, store, key)  # ships the captures, records capture.offloaded
    archive_pass(root, store, key)  # ships the session that recorded it
    proc = ledger_cli("verify", url, "--key-file", str(key_file), "--json")
    assert proc.returncode == 0, proc.stderr
    assert verdicts(proc) == {e.capture_id: "ok" for e in sealed}
    pcap_key, sidecar_key = capture_keys(NS, sealed[1].capture_id)
    delete(pcap_key)
    delete(sidecar_key)
    proc = ledger_cli("verify", url, "--key-file", str(key_file), "--json")
    assert proc.returncode == 1, proc.stderr
    assert verdicts(proc) == {sealed[0].capture_id: "ok", sealed[1].capture_id: "missing_capture"}
