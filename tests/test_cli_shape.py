"""The CLI behaves the same everywhere (issue 13's repairs), checked on the real `ledger`
in a subprocess: --version, shell completion, --json on every command that reports (one
object that parses, also on failure), LEDGER_ROOT on verify and tail, tables at 80 columns.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli_ops import NS, ledger, site  # noqa: F401  (site is a fixture)

from ledger import Ledger
from ledger import events as ev
from ledger.keys import load_key_file

LEDGER = shutil.which("ledger") or "ledger"


def console_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run([LEDGER, *args], capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})


def one_object(proc: subprocess.CompletedProcess) -> dict:
    """stdout holds exactly one JSON object."""
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_version_names_the_verify_loop():
    r = console_script("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ledger 0.") and "verify loop" in r.stdout
    pure = console_script("--version", env={"LEDGER_PURE_PYTHON": "1"})
    assert "pure-Python verify loop" in pure.stdout
    assert ledger("--version").stdout == r.stdout  # python -m ledger.cli too


def test_shell_completion_is_enabled():
    r = console_script("--show-completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "_LEDGER_COMPLETE" in r.stdout
    env = {"_LEDGER_COMPLETE": "complete_bash", "COMP_WORDS": "ledger verify-p", "COMP_CWORD": "1"}
    done = console_script(env=env)
    assert done.returncode == 0 and done.stdout.split() == ["verify-proof"], (done.stdout, done.stderr)


def test_json_on_every_command_that_reports(site, tmp_path):  # noqa: F811
    root, store, key_file, common = site
    keys = tmp_path / "keys"
    keys.mkdir()
    made = one_object(ledger("keygen", "alpha", "--out", str(keys / "a.key"), "--hmac", str(keys / "h.key"), "--json"))
    assert made["ok"] and made["signer"]["verifier_key"].startswith("alpha+") and len(made["hmac"]["key_id"]) > 0

    archived = ledger("archive", *common, "--store", store, "--hot-retention-days", "0", "--json")
    assert archived.returncode == 0, archived.stderr
    out = one_object(archived)
    assert out["ok"] and len(out["pass"]["batches"]) == 3 and len(out["batches"]) == 3

    rebuilt = ledger("rebuild", "--root", str(root), "--namespace", NS, "--store", store, "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    out = one_object(rebuilt)
    assert out["ok"] and out["batches"] == 3 and out["folded"]["archived"] == 3

    first = one_object(ledger("batches", "--root", str(root), "--namespace", NS, "--json"))
    dest = tmp_path / "restored"
    restored = ledger("restore", first[0]["session"], "--to", str(dest), *common, "--store", store, "--json")
    assert restored.returncode == 0, restored.stderr
    assert one_object(restored)["events"] > 0

    dry = ledger("rotate-remote", "--before", "2999-01-01", "--force", "--dry-run", *common, "--store", store, "--json")
    assert dry.returncode == 0, dry.stderr
    out = one_object(dry)
    assert out["ok"] and out["dry_run"] and len(out["deleted"]) >= 3 * 3

    gc = ledger("gc", "--dry-run", "--max-files", "0", "--root", str(root), "--namespace", NS, "--json")
    assert gc.returncode == 0, gc.stderr
    assert one_object(gc)["dry_run"] is True


@pytest.mark.parametrize(
    "command",
    [
        ["archive", "--store", "STORE"],
        ["gc", "--max-files", "0"],
        ["rebuild", "--store", "ftp://host/x"],
        ["rotate-remote", "--before", "2999-01-01", "--store", "STORE"],
        ["restore", "20991231T000000.000000Z-nope", "--to", "TMP", "--store", "STORE"],
        ["keygen"],
    ],
    ids=["archive", "gc", "rebuild", "rotate-remote", "restore", "keygen"],
)
def test_json_failure_is_one_object_too(site, tmp_path, command):  # noqa: F811
    root, store, key_file, _ = site
    args = [store if a == "STORE" else str(tmp_path) if a == "TMP" else a for a in command]
    if command[0] != "keygen":
        args += ["--root", str(root), "--namespace", NS]  # and no key: refused, exit 2
    r = ledger(*args, "--json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    out = one_object(r)
    assert out["ok"] is False and out["exit_code"] == 2 and out["error"], out
    assert r.stderr.startswith("ledger: error: ")


def test_rotate_remote_json_keeps_the_report_when_keys_are_kept(site):  # noqa: F811
    root, store, key_file, common = site
    assert ledger("archive", *common, "--store", store).returncode == 0
    cold = Path(store.removeprefix("file://"))
    manifests = sorted(cold.rglob("*.manifest.json"))
    assert manifests, sorted(cold.rglob("*"))
    manifests[0].unlink()  # a batch the store no longer confirms: kept, exit 2
    r = ledger("rotate-remote", "--before", "2999-01-01", "--force", *common, "--store", store, "--json")
    assert r.returncode == 2, r.stderr
    out = one_object(r)
    assert out["ok"] is False and out["kept"] and "kept, not deleted" in out["error"]


def test_ledger_root_means_the_same_on_verify_and_tail(site):  # noqa: F811
    root, _, key_file, _ = site
    env = {"LEDGER_ROOT": str(root), "LEDGER_HMAC_KEY_FILE": str(key_file)}
    r = ledger("verify", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["files"]) == 3
    assert ledger("verify", "--root", str(root)).returncode == 0
    assert "nothing to verify" in ledger("verify").stderr  # no root given: an empty input set is an error

    t = ledger("tail", "-n", "2", "--json", env=env)
    assert t.returncode == 0, t.stderr
    assert len(t.stdout.splitlines()) == 2 and all(json.loads(line)["seq"] >= 0 for line in t.stdout.splitlines())
    checked = ledger("tail", "--verify", "-n", "1", env=env)  # the key comes from LEDGER_HMAC_KEY_FILE
    assert checked.returncode == 0 and "HMAC signatures verified" in checked.stderr, checked.stderr
    none = ledger("tail")
    assert none.returncode == 2 and "nothing to tail" in none.stderr


def run_in_tty(*args: str, columns: int = 80) -> str:
    """The real `ledger` with a terminal on stdout, COLUMNS wide."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", *args],
        stdout=child,
        stderr=subprocess.PIPE,
        env={**clean, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"},
    )
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(parent, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(parent)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    return b"".join(chunks).decode()


def test_tables_are_readable_at_80_columns(tmp_path):
    key_file = tmp_path / "hmac.key"
    from ledger.keys import write_key_file

    write_key_file(key_file)
    root = tmp_path / "root"
    cid = "20261123T200000Z-0000c0de"
    cn = "a-client-with-a-rather-long-common-name.example.com"
    with Ledger.open(root, namespace=NS, hmac_key=load_key_file(key_file)) as led:
        led.record(
            "capture.started",
            ev.CaptureStarted(
                capture_id=cid,
                cn=cn,
                ip="2001:db8:1234:5678:9abc:def0:1234:5678",
                reason="r",
                severity="high",
                path=str(tmp_path / "c.pcap"),
                interface="lo",
                duration_s=1,
                snaplen=96,
            ),
        )
    text = run_in_tty("captures", "--root", str(root), "--namespace", NS)
    lines = text.replace("\r", "").splitlines()
    assert lines and max(len(line) for line in lines) <= 80, text
    assert "…" not in text and cid in text and "capturing" in text, text
    cells = "".join(line.split("│")[2] for line in lines if line.count("│") > 3)  # the cn column, wrapped
    assert cells.replace(" ", "").startswith(cn), text
