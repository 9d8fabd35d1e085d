"""The operator commands end to end, as a user runs them: real processes, a file:// store.

archive (twice: idempotent), batches, captures, gc, rebuild, rotate-remote, restore,
verify of the cold tier and of both tiers, and the namespace lock held by a host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from ledger import Ledger
from ledger import events as ev
from ledger.cli import app
from ledger.keys import load_key_file, write_key_file
from ledger.reader import session_paths

NS = "edge-1"


def ledger(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


@pytest.fixture
def site(tmp_path):
    """A root with three sealed sessions (one holding a capture pointer) and a key."""
    key_file = tmp_path / "hmac.key"
    write_key_file(key_file)
    key = load_key_file(key_file)
    root = tmp_path / "root"
    pcap = tmp_path / "c1.pcap"
    pcap.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 20)
    import hashlib

    sha = hashlib.sha256(pcap.read_bytes()).hexdigest()
    for i in range(3):
        with Ledger.open(root, namespace=NS, hmac_key=key) as led:
            for j in range(20):
                led.record("conn.closed", {"i": i, "j": j})
            if i == 0:
                cid = "20261123T200000Z-0000c0de"
                led.record(
                    "capture.started",
                    ev.CaptureStarted(
                        capture_id=cid,
                        cn="alice",
                        ip="10.0.0.1",
                        reason="r",
                        severity="high",
                        path=str(pcap),
                        interface="lo",
                        duration_s=1,
                        snaplen=96,
                    ),
                )
                led.record(
                    "capture.sealed",
                    ev.CaptureSealed(
                        capture_id=cid,
                        cn="alice",
                        ip="10.0.0.1",
                        reason="r",
                        path=str(pcap),
                        bytes=24,
                        sha256=sha,
                        started_at="2026-11-23T20:00:00.000000Z",
                        duration_ms=1000,
                    ),
                )
    store = (tmp_path / "cold").as_uri()
    common = ["--root", str(root), "--namespace", NS, "--key-file", str(key_file)]
    return root, store, key_file, common


def test_archive_twice_then_views_and_both_tiers(site):
    root, store, key_file, common = site
    first = ledger("archive", *common, "--store", store, "--hot-retention-days", "0")
    assert first.returncode == 0, first.stderr
    summary = "archived 3 session(s), 1 capture(s); deleted 3 local session(s) (hot retention 0 days); 0 error(s)"
    assert summary in first.stderr
    again = ledger("archive", *common, "--store", store, "--hot-retention-days", "0")
    assert again.returncode == 0, again.stderr
    assert "archived 1 session(s)" in again.stderr  # only the first run's own session: nothing twice

    batches = ledger("batches", "--root", str(root), "--namespace", NS, "--json")
    assert batches.returncode == 0, batches.stderr
    rows = json.loads(batches.stdout)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"archived"} and all(r["local_deleted"] for r in rows)

    caps = json.loads(ledger("captures", "--root", str(root), "--namespace", NS, "--json").stdout)
    assert [(c["capture_id"], c["state"]) for c in caps] == [("20261123T200000Z-0000c0de", "offloaded")]

    cold = ledger("verify", "--key-file", str(key_file), store, "--json")
    assert cold.returncode == 0, cold.stderr
    assert len(json.loads(cold.stdout)["files"]) == 4
    tiers = ledger("verify", "--key-file", str(key_file), "--tiers", str(root), "--store", store, "--json")
    assert tiers.returncode == 0, tiers.stderr
    out = json.loads(tiers.stdout)
    assert out["ok"] and out["tiers"][0]["joined"]

    rebuilt = ledger("rebuild", "--root", str(root), "--namespace", NS, "--store", store)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "1 captures, 4 batches" in rebuilt.stderr


def test_restore_rotate_and_gc(site, tmp_path):
    root, store, key_file, common = site
    original = {p.stem: p.read_bytes() for p in session_paths(root / NS)}
    assert ledger("archive", *common, "--store", store).returncode == 0
    first = sorted(original)[0]

    dest = tmp_path / "restored"
    r = ledger("restore", first, "--to", str(dest), *common, "--store", store)
    assert r.returncode == 0, r.stderr
    assert (dest / NS / f"{first}.ndjson").read_bytes() == original[first]
    assert (
        ledger("restore", "20991231T000000.000000Z-nope", "--to", str(dest), *common, "--store", store).returncode == 2
    )

    dry = ledger("rotate-remote", "--before", "2999-01-01", "--force", "--dry-run", *common, "--store", store)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("would delete") >= 3 * 3 + 2  # 3 objects a batch, pcap + sidecar
    assert (Path(store.removeprefix("file://")) / NS / "sessions").exists()
    real = ledger("rotate-remote", "--before", "2999-01-01", "--force", *common, "--store", store)
    assert real.returncode == 0, real.stderr
    assert not any((Path(store.removeprefix("file://")) / NS / "sessions").rglob("*.gz"))
    rows = json.loads(ledger("batches", "--root", str(root), "--namespace", NS, "--json").stdout)
    assert {r["state"] for r in rows} == {"remote-deleted"}

    gc = ledger("gc", "--dry-run", "--max-files", "0", "--root", str(root), "--namespace", NS)
    assert gc.returncode == 0, gc.stderr


def test_commands_that_record_name_the_host_that_holds_the_namespace(site):
    root, store, key_file, common = site
    with Ledger.open(root, namespace=NS, hmac_key=load_key_file(key_file)):
        r = ledger("archive", *common, "--store", store)
    assert r.returncode == 2
    assert f"held by another writer (pid {os.getpid()}" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_unknown_store_scheme_and_missing_key_are_usage_errors(site):
    root, store, key_file, common = site
    r = ledger("archive", *common, "--store", "ftp://host/x")
    assert r.returncode == 2 and "unsupported store URL scheme" in r.stderr
    r = ledger("archive", "--root", str(root), "--namespace", NS, "--store", store)
    assert r.returncode == 2 and "--key-file" in r.stderr
    started = time.monotonic()
    r = ledger("verify", "--key-file", str(key_file), "file:///nonexistent-cold-store")
    assert r.returncode == 2 and time.monotonic() - started < 60


def _command_paths(group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):  # a group such as `prove`
            yield from _command_paths(command, (*prefix, name))


def test_every_command_prints_its_help():
    """Help is plain text: `verify --help` once died on rich markup ("prefix[/namespace]")."""
    runner = CliRunner()
    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("verify",) in paths and len(paths) > 10
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output, result.exception)
        assert "Usage" in result.output, path


# ---- key files: exposed ones are refused for signing, warned about for verifying ---------------


@pytest.mark.parametrize(
    "command",
    [
        ["archive", "--store", "STORE"],
        ["gc", "--max-files", "0"],
        ["capture", "--ip", "10.0.0.1", "--cn", "alice", "--reason", "r", "--duration", "1"],
    ],
    ids=["archive", "gc", "capture"],
)
def test_commands_that_sign_refuse_a_key_readable_by_others(site, command):
    root, store, key_file, common = site
    key_file.chmod(0o644)
    before = sorted(p.name for p in (root / NS).iterdir())
    r = ledger(*[store if a == "STORE" else a for a in command], *common)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: error: refusing to sign"), r.stderr
    assert "readable by group or others (mode 0644)" in lines[0] and f"chmod 600 {key_file}" in lines[0]
    assert load_key_file(key_file).hex() not in r.stderr + r.stdout
    assert sorted(p.name for p in (root / NS).iterdir()) == before  # nothing was written


def test_verify_warns_once_about_a_key_readable_by_others(site, tmp_path):
    root, _, key_file, _ = site
    key_file.chmod(0o640)
    r = ledger("verify", "--key-file", str(key_file), str(root))
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("ledger: warning: ")]
    assert len(warnings) == 1 and "readable by group or others (mode 0640)" in warnings[0], r.stderr
    key_file.chmod(0o600)
    assert "warning" not in ledger("verify", "--key-file", str(key_file), str(root)).stderr


def test_an_unparseable_pubkey_is_named_not_echoed(site):
    root, _, _, _ = site
    secret = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
    for value in (f"PRIVATE+KEY+alpha+12345678+{secret}", f"alpha+12345678+{secret[:-1]}", f"alpha+1234+{secret}"):
        r = ledger("verify", "--pubkey", value, str(root))
        assert r.returncode == 2, r.stderr
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("ledger: error: "), r.stderr
        assert "'alpha'" in lines[0] and f"({len(value.removeprefix('PRIVATE+KEY+'))} characters)" in lines[0], lines
        assert secret[:20] not in r.stderr, r.stderr
