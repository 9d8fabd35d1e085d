"""Never hang, and an insider's planted special file is no "could not check": a FIFO,
/dev/zero or a directory as .last-seal.json fails the record (exit 1) and the rest is
verified; a FIFO *.ndjson is skipped with a warning by captures, rebuild and gc; a FIFO
given as a key, verifier key, CA, trusted note or config is refused with one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.reader import session_paths

KEY = bytes(range(32))
NS = "ns"
TIMEOUT = 60  # a hang fails the test instead of the suite hanging


def _cli(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.entry", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def root(tmp_path) -> Path:
    for i in range(2):
        with Ledger.open(tmp_path / "hot", namespace=NS, hmac_key=KEY) as led:
            led.record("conn.anomaly", {"i": i})
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    return tmp_path / "hot"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory", "oversized"])
def test_a_planted_last_seal_record_fails_the_record_only(root, kind):
    record = root / NS / ".last-seal.json"
    record.unlink()
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "dev-zero":
        record.symlink_to("/dev/zero")
    elif kind == "directory":
        record.mkdir()
    else:
        record.write_bytes(b" " * (1 << 20))
    run = _cli("verify", "--key-file", root.parent / "k", root)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and "ledger: error" not in run.stderr
    assert run.stderr.count("PASS ") == 2  # every session still verified
    (fail,) = [line for line in run.stderr.splitlines() if line.startswith("FAIL ")]
    assert ".last-seal.json" in fail


def test_a_fifo_session_file_is_skipped_by_readers_and_views(root, caplog):
    fifo = root / NS / "20000101T000000.000000Z-ffffffff.ndjson"  # sorts first
    os.mkfifo(fifo)
    os.mkfifo(root / NS / "zz.ndjson")  # sorts last, and is no session id
    with caplog.at_level("WARNING"):
        assert fifo not in session_paths(root / NS) and len(session_paths(root / NS)) == 2
    assert any("a FIFO" in r.getMessage() for r in caplog.records)
    key = root.parent / "k"
    for args in (["captures"], ["rebuild", "--hot-only"], ["gc", "--key-file", key]):
        run = _cli(*args, "--root", root, "--namespace", NS)
        assert run.returncode == 0, (args, run.stderr)
        assert "Traceback" not in run.stderr


@pytest.mark.parametrize("option", ["--key-file", "--pubkey", "--tsa-ca", "--trust", "--config"])
def test_a_fifo_as_an_input_file_is_refused_in_one_line(root, option):
    fifo = root.parent / "fifo"
    os.mkfifo(fifo)
    extra = [] if option == "--key-file" else ["--key-file", root.parent / "k"]
    run = _cli("verify", *extra, option, fifo, root)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: error: ") and "a FIFO" in lines[0], run.stderr
