"""The closing line of verify does not blame missing key options when a key was given:
a file that failed as a whole (missing_session, bad_gzip) says no line was read, and
which keys were given; without any key it still says signatures were not checked."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

from ledger import Ledger

KEY = bytes(range(32))
NS = "ns"
BLAME = "no --key-file/--pubkey/--fs-seed"


def _closing(*args) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    run = subprocess.run(
        [sys.executable, "-m", "ledger.entry", "verify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return run.returncode, run.stderr.splitlines()[-1]


def test_file_level_failures_name_the_keys_given(tmp_path):
    root = tmp_path / "hot"
    for i in range(2):
        with Ledger.open(root, namespace=NS, hmac_key=KEY) as led:
            led.record("conn.anomaly", {"i": i})
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    sessions = sorted((root / NS).glob("*.ndjson"))
    bad_gz = tmp_path / "cut.ndjson.gz"
    bad_gz.write_bytes(gzip.compress(sessions[0].read_bytes())[:40])
    sessions[-1].unlink()  # the newest session: missing_session against .last-seal.json

    for target, reason in ((root, "missing_session"), (bad_gz, "bad_gzip")):
        code, line = _closing("--key-file", key_file, target)
        assert code == 1 and f"({reason})" in line, line
        assert BLAME not in line and "HMAC key given" in line, line
    code, line = _closing(bad_gz)  # no key at all: that is still what the line says
    assert code == 1 and BLAME in line, line
