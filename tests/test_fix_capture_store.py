"""Captures the store lost, or a view misreports: nothing is deleted, re-uploaded or
judged on the view alone (a real ``ledger demo`` with real tcpdump and a file:// store)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NS = "demo"
REAL_OK = shutil.which("tcpdump") is not None and hasattr(os, "geteuid") and os.geteuid() == 0
pytestmark = pytest.mark.skipif(not REAL_OK, reason="needs tcpdump on PATH and root to capture on lo")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def demo_once(tmp_path_factory):
    from ledger.demo import run_demo

    root = tmp_path_factory.mktemp("demo") / "dm"
    result = run_demo(root, seconds=1.5, clients=4, seed=1)
    assert result.captures, result.capture_note
    shutil.copytree(root, root.with_name("pristine"), symlinks=True)
    return root


@pytest.fixture
def dm(demo_once):
    """The demo's state afresh, at the same path (its events name the pcaps' absolute
    paths): one capture offloaded, the session that sealed it archived and deleted."""
    shutil.rmtree(demo_once)
    shutil.copytree(demo_once.with_name("pristine"), demo_once, symlinks=True)
    return demo_once


def opts(dm: Path, store: bool = True) -> list:
    base = ["--root", dm / "ledger", "--namespace", NS, "--key-file", dm / "hmac.key"]
    return base + (["--store", (dm / "cold").resolve().as_uri()] if store else [])


def stored_pcaps(dm: Path) -> list[Path]:
    return sorted((dm / "cold").rglob("*.pcap"))


def local_pcaps(dm: Path) -> list[Path]:
    return sorted((dm / "ledger" / NS / "captures").glob("*.pcap"))


# ---- defect 1: a capture the store lost -----------------------------------------------------


def test_archive_uploads_again_a_capture_the_store_lost(dm):
    [pcap] = stored_pcaps(dm)
    local = local_pcaps(dm)[0].read_bytes()
    for p in (dm / "cold").rglob("*.pcap*"):
        p.unlink()
    out = cli("archive", *opts(dm))
    assert out.returncode == 0, out.stderr
    assert "1 capture(s)" in out.stderr
    assert pcap.read_bytes() == local
    again = cli("archive", *opts(dm))  # present now: not uploaded a third time
    assert again.returncode == 0 and "0 capture(s)" in again.stderr, again.stderr


def test_archive_does_not_ship_a_local_pcap_that_differs_from_its_seal(dm):
    for p in (dm / "cold").rglob("*.pcap*"):
        p.unlink()
    [local] = local_pcaps(dm)
    data = bytearray(local.read_bytes())
    data[-1] ^= 1
    local.write_bytes(bytes(data))
    out = cli("archive", *opts(dm))
    assert out.returncode == 1, out.stderr
    assert "differ from its capture.sealed" in out.stderr
    assert stored_pcaps(dm) == []


def test_gc_does_not_evict_as_offloaded_a_capture_the_store_lost(dm):
    for p in (dm / "cold").rglob("*.pcap*"):
        p.unlink()
    for store in (True, False):
        out = cli("gc", "--dry-run", "--max-files", "0", *opts(dm, store))
        assert out.returncode == 0, out.stderr
        assert "would evict" in out.stdout and "NOT offloaded" in out.stdout, out.stdout
        assert "only copy" in out.stdout if store else "no store configured" in out.stdout
    # The budget still applies, as to a never-offloaded capture, and the event says so.
    out = cli("gc", "--max-files", "0", *opts(dm))
    assert out.returncode == 0, out.stderr
    assert "evicted" in out.stdout and "NOT offloaded" in out.stdout and "only copy" in out.stdout


def test_gc_counts_as_offloaded_a_capture_confirmed_in_the_store(dm):
    out = cli("gc", "--dry-run", "--max-files", "0", *opts(dm))
    assert out.returncode == 0, out.stderr
    assert "offloaded)" in out.stdout, out.stdout
    assert "NOT offloaded" not in out.stdout, out.stdout


def test_gc_does_not_count_a_different_stored_pcap_as_offloaded(dm):
    [pcap] = stored_pcaps(dm)
    data = bytearray(pcap.read_bytes())
    data[-1] ^= 1
    pcap.write_bytes(bytes(data))
    out = cli("gc", "--dry-run", "--max-files", "0", *opts(dm))
    assert out.returncode == 0, out.stderr
    assert "NOT offloaded" in out.stdout and "different in" in out.stdout, out.stdout


# ---- defect 2: a corrupt view and rotate-remote / gc ---------------------------------------


def _edit_capture_view(dm: Path, **changes) -> str:
    """What whoever owns the disk can do: rewrite the capture's entry in the LMDB view."""
    import msgspec

    from ledger.projections import Projector, _Txn

    with Projector(dm / "ledger", NS) as views:
        views.catch_up()
        [v] = views.captures()
        with views.env.begin(write=True) as txn:
            _Txn(txn, views.dbs).put_capture(msgspec.structs.replace(v, **changes))
    return v.capture_id


def test_rotate_remote_keeps_a_fresh_capture_the_view_calls_old(dm):
    cid = _edit_capture_view(dm, started_at="2001-01-01T00:00:00.000000Z")
    [pcap] = stored_pcaps(dm)
    dry = cli("rotate-remote", "--before", "30d", "--dry-run", *opts(dm))
    out = cli("rotate-remote", "--before", "30d", *opts(dm))
    assert out.returncode == 2 and dry.returncode == 2, out.stderr
    assert pcap.exists() and pcap.with_name(pcap.name + ".sha256").exists()
    assert f"capture {cid}'s id does not start before the cut-off" in out.stderr
    assert "0 key(s) deleted" in out.stderr, out.stderr


def test_gc_does_not_count_a_remote_deleted_capture_as_offloaded(dm):
    _edit_capture_view(dm, state="remote-deleted")
    out = cli("gc", "--dry-run", "--max-files", "0", *opts(dm))
    assert out.returncode == 0, out.stderr
    assert "NOT offloaded" in out.stdout, out.stdout


# ---- defects 3 and 4: captures whose events straddle the tiers -----------------------------


def verify_json(*args) -> tuple[int, list[tuple[str, str, str]]]:
    """(exit code, [(where: 'store' or 'local', verdict, detail)]) of ``ledger verify --json``."""
    import json

    proc = cli("verify", "--json", *args)
    caps = json.loads(proc.stdout)["captures"]
    return proc.returncode, sorted(
        ("store" if c["where"].startswith("file://") else "local", c["verdict"], c["detail"]) for c in caps
    )


def tiers(dm: Path) -> list:
    return ["--key-file", dm / "hmac.key", "--tiers", dm / "ledger", "--store", (dm / "cold").resolve().as_uri()]


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_verify_dir_says_a_pcap_sealed_in_an_archived_session_was_not_checked(dm):
    flip_last_byte(local_pcaps(dm)[0])
    code, caps = verify_json("--key-file", dm / "hmac.key", dm / "ledger")
    assert code == 0  # nothing here can vouch for it, or against it ...
    [(where, verdict, detail)] = caps  # ... but it is named, not passed over
    assert (where, verdict) == ("local", "unrecorded") and "--tiers" in detail


def test_tiers_checks_a_local_pcap_against_its_archived_capture_sealed(dm):
    code, caps = verify_json(*tiers(dm))
    assert code == 0 and [c[:2] for c in caps] == [("local", "ok"), ("store", "ok")], caps
    flip_last_byte(local_pcaps(dm)[0])
    code, caps = verify_json(*tiers(dm))
    assert code == 1 and [c[:2] for c in caps] == [("local", "capture_mismatch"), ("store", "ok")], caps


@pytest.mark.parametrize("instead", [None, "fifo", "directory"])
def test_tiers_reports_a_shipped_pcap_gone_from_the_store(dm, instead):
    """The capture.offloaded is in a hot session (the demo's archive pass wrote it)."""
    [pcap] = stored_pcaps(dm)
    pcap.unlink()
    if instead == "fifo":
        os.mkfifo(pcap)
    elif instead == "directory":
        pcap.mkdir()
    code, caps = verify_json(*tiers(dm))  # within the subprocess timeout: a FIFO is never opened blocking
    assert code == 1 and [c[:2] for c in caps] == [("local", "ok"), ("store", "missing_capture")], caps


@pytest.mark.parametrize("instead", [None, "fifo", "directory"])
def test_verify_url_with_a_root_reports_a_pcap_its_views_say_was_shipped(dm, instead, monkeypatch):
    """``verify file://…``: the capture.offloaded is in a hot session, so the archived
    sessions alone do not know the pcap was shipped; the root's pointer view does."""
    url = (dm / "cold").resolve().as_uri()
    monkeypatch.setenv("LEDGER_ROOT", str(dm / "ledger"))
    code, caps = verify_json("--key-file", dm / "hmac.key", url)
    assert code == 0 and [c[:2] for c in caps] == [("store", "ok")], caps
    [pcap] = stored_pcaps(dm)
    pcap.unlink()
    if instead == "fifo":
        os.mkfifo(pcap)
    elif instead == "directory":
        pcap.mkdir()
    for target in (url, f"{url}/{NS}"):
        code, caps = verify_json("--key-file", dm / "hmac.key", target)
        assert code == 1 and [c[:2] for c in caps] == [("store", "missing_capture")], caps
    monkeypatch.setenv("LEDGER_ROOT", str(dm / "elsewhere"))  # no root, no view: the store alone
    code, caps = verify_json("--key-file", dm / "hmac.key", url)
    assert code == 0 and caps == [], caps
