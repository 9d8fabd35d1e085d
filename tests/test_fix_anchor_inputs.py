"""--trust and --witness on intact evidence: a gzip session, standard input, and a witness
URL that names the namespace (as ``verify`` takes a store URL) are no false INCONSISTENT."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

from ledger import Ledger
from ledger.anchors import session_checkpoints
from ledger.cold.archive import Archiver
from ledger.cold.stores import open_store

KEY = bytes(range(32))
NS = "edge-1"


def _cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.entry", *map(str, args)], input=stdin, capture_output=True, timeout=120, env=env
    )


def _session(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A sealed session, its newest signed note saved by an auditor, a 0600 key file."""
    with Ledger.open(tmp_path / "hot", namespace=NS, hmac_key=KEY) as led:
        for i in range(5):
            led.record("conn.anomaly", {"i": i})
    (path,) = (tmp_path / "hot" / NS).glob("*.ndjson")
    found, _ = session_checkpoints(path)
    note = tmp_path / "saved.note"
    note.write_bytes(found[-1][1])
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    return path, note, key_file


def test_trust_on_a_gzip_session_reads_it_decompressed(tmp_path):
    path, note, key_file = _session(tmp_path)
    gz = tmp_path / "archived" / f"{path.stem}.ndjson.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(path.read_bytes()))
    run = _cli("verify", "--key-file", key_file, gz, "--trust", note)
    assert run.returncode == 0, run.stderr.decode()
    assert b"trusted checkpoint 1: consistent" in run.stderr


def test_trust_with_standard_input_is_one_line_exit_2(tmp_path):
    path, note, key_file = _session(tmp_path)
    run = _cli("verify", "-", "--key-file", key_file, "--trust", note, stdin=path.read_bytes())
    assert run.returncode == 2, run.stderr.decode()
    lines = run.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: error: ") and "INCONSISTENT" not in lines[0]


def test_witness_url_naming_the_namespace_finds_the_shipped_checkpoints(tmp_path):
    path, _, key_file = _session(tmp_path)
    cold = tmp_path / "cold"
    store = open_store(cold.as_uri())
    with Ledger.open(tmp_path / "hot", namespace=NS, hmac_key=KEY) as host:
        archiver = Archiver(tmp_path / "hot", NS, store, host, [KEY], hot_retention_s=10**9)
        try:
            errors: list[str] = []
            assert archiver.upload_checkpoints(errors) > 0 and errors == []
        finally:
            archiver.close()
    for url in (cold.as_uri(), (cold / NS).as_uri()):
        run = _cli("verify", "--key-file", key_file, path, "--witness", url)
        assert run.returncode == 0, (url, run.stderr.decode())
        assert b": consistent: " in run.stderr and b"INCONSISTENT" not in run.stderr


def test_an_inclusion_proof_from_a_gzip_session_is_the_plain_one(tmp_path):
    path, _, _ = _session(tmp_path)
    gz = tmp_path / f"{path.stem}.ndjson.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    plain, packed = _cli("prove", "inclusion", path, "--seq", "2"), _cli("prove", "inclusion", gz, "--seq", "2")
    assert packed.returncode == plain.returncode == 0, packed.stderr.decode()
    assert packed.stdout == plain.stdout
