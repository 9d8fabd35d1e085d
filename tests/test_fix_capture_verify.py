"""``ledger verify`` and what may stand in a pcap's place, or where a capture's events are:
a FIFO or directory is never read, an archived session's captures are not silently
unchecked, a shipped pcap missing from the store is reported. Real tcpdump pcaps, real
files, a file:// store, ``ledger verify`` as a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_capture_verify import ledger_cli, make_captures, verdicts

from ledger import keys as keymod

pytestmark = pytest.mark.skipif(
    not (os.geteuid() == 0 and __import__("shutil").which("tcpdump")), reason="needs tcpdump and root"
)


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "hmac.key"
    keymod.write_key_file(path)
    return path


# ---- defect 5: a FIFO or a directory in a pcap's place -------------------------------------


@pytest.mark.parametrize("what", ["fifo", "directory"])
def test_a_fifo_or_directory_in_a_pcaps_place_fails_that_capture_and_verifies_the_rest(tmp_path, key_file, what):
    root = tmp_path / "hot"
    sealed = make_captures(root, keymod.load_key_file(key_file))
    odd = Path(sealed[0].path)
    odd.unlink()
    os.mkfifo(odd) if what == "fifo" else odd.mkdir()
    proc = ledger_cli("verify", str(root), "--key-file", str(key_file), "--json")  # timeout: 120 s, never hangs
    assert proc.returncode == 1, proc.stderr
    assert verdicts(proc) == {sealed[0].capture_id: "capture_mismatch", sealed[1].capture_id: "ok"}
    detail = next(c["detail"] for c in json.loads(proc.stdout)["captures"] if c["capture_id"] == sealed[0].capture_id)
    assert ("a FIFO" if what == "fifo" else "a directory") in detail
    human = ledger_cli("verify", str(root), "--key-file", str(key_file))
    assert human.returncode == 1 and "Traceback" not in human.stderr and "ledger: error" not in human.stderr
