"""A stored .tsr, however damaged, is a bad_timestamp verdict on its own session; a token
that is not granted fails with or without a CA; a missing token is said (issue 11, 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tsa import make_pki, tsa_server

from ledger import Ledger
from ledger.cold.archive import Archiver
from ledger.cold.remote import verify_store
from ledger.cold.stores import open_store
from ledger.cold.tsa import TimestampInvalid, verify_token
from ledger.verify import Policy

KEY = bytes(range(32))
NS = "edge-1"
POLICY = Policy(keys=(KEY,))


def _archive(root: Path, store, tsa_url: str | None) -> None:
    for i in range(3):
        with Ledger.open(root, namespace=NS, hmac_key=KEY) as led:
            led.record("conn.anomaly", {"i": i})
    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0.0, tsa_url=tsa_url)
        try:
            assert archiver.run_once().errors == []
        finally:
            archiver.close()


def _manifests(store) -> list[str]:
    return [i.key for i in store.list(f"{NS}/sessions/") if i.key.endswith(".manifest.json")]


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    """Three archived sessions with real tokens (openssl ts), the CA, a 0600 key file."""
    tmp = tmp_path_factory.mktemp("stamped")
    pki = make_pki(tmp / "pki")
    store = open_store((tmp / "cold").as_uri())
    with tsa_server(pki) as server:
        _archive(tmp / "hot", store, server.url)
    manifests = sorted(_manifests(store))
    assert len(manifests) >= 3
    key_file = tmp / "hmac.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    return store, pki.ca_pem.read_bytes(), pki.ca_pem, key_file, manifests


def _tsr(store, manifest_key: str) -> Path:
    return store.root / (manifest_key.removesuffix(".manifest.json") + ".tsr")


def _flip(token: bytes, i: int) -> bytes:
    b = bytearray(token)
    b[i] ^= 0x01
    return bytes(b)


def _sweep(token: bytes, manifest: bytes, ca: bytes | None) -> dict[int, str]:
    """offset -> the verdict's detail, for every flipped byte that fails; nothing else escapes."""
    failed = {}
    for i in range(len(token)):
        try:
            verify_token(_flip(token, i), manifest, ca)
        except TimestampInvalid as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 500
            failed[i] = str(exc)
    return failed


def test_every_flipped_byte_of_a_real_token_is_a_verdict(stamped):
    store, ca, _, _, manifests = stamped
    token = _tsr(store, manifests[0]).read_bytes()
    manifest = (store.root / manifests[0]).read_bytes()
    assert verify_token(token, manifest, None) and verify_token(token, manifest, ca)
    without = _sweep(token, manifest, None)
    with_ca = _sweep(token, manifest, ca)
    assert len(with_ca) > len(token) // 2 and without
    assert any("is malformed" in d for d in without.values())  # the parsers' own errors, as verdicts


def _cli(*args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.entry", *map(str, args)], capture_output=True, text=True, timeout=120, env=env
    )


def test_a_flipped_token_byte_is_exit_1_on_that_session_only(stamped, tmp_path):
    store, ca, ca_file, key_file, manifests = stamped
    path = _tsr(store, manifests[1])
    token = path.read_bytes()
    manifest = (store.root / manifests[1]).read_bytes()
    odd = sorted(_sweep(token, manifest, None).items(), key=lambda kv: "is malformed" not in kv[1])
    offsets = [odd[0][0]] + [i for i in range(0, len(token), 7) if i in dict(odd)][:1]
    try:
        for i in offsets:
            path.write_bytes(_flip(token, i))
            for extra in ([], ["--tsa-ca", ca_file]):
                run = _cli("verify", "--json", "--key-file", key_file, *extra, store.url)
                assert run.returncode == 1, (i, extra, run.stderr)
                assert "internal error" not in run.stderr and "Traceback" not in run.stderr
                files = json.loads(run.stdout)["files"]
                got = [(f["first_error"] or {}).get("reason") for f in files]
                assert got == [None, "bad_timestamp", None][: len(got)] + [None] * (len(got) - 3), (i, got)
        # in-process, every 7th byte: never an exception, the other sessions intact
        for i in range(0, len(token), 7):
            path.write_bytes(_flip(token, i))
            for c in (None, ca):
                report = verify_store(store, NS, POLICY, tsa_ca_pem=c)
                assert all(f.ok for n, f in enumerate(report.files) if n != 1)
                assert report.files[1].ok or report.files[1].first_error.reason == "bad_timestamp"
    finally:
        path.write_bytes(token)


def test_a_token_not_granted_fails_without_a_ca_too(stamped):
    store, ca, _, _, manifests = stamped
    path = _tsr(store, manifests[2])
    token = path.read_bytes()
    assert token[4:9] == bytes.fromhex("3003020100")  # PKIStatusInfo { status granted }
    try:
        path.write_bytes(token[:8] + b"\x02" + token[9:])  # rejection
        for c in (None, ca):
            report = verify_store(store, NS, POLICY, tsa_ca_pem=c)
            err = report.files[2].first_error
            assert err is not None and err.reason == "bad_timestamp", (c is None, report.files[2].as_dict())
    finally:
        path.write_bytes(token)


def test_a_deleted_token_is_noted(stamped):
    store, ca, _, _, manifests = stamped
    path = _tsr(store, manifests[0])
    token = path.read_bytes()
    try:
        path.unlink()
        report = verify_store(store, NS, POLICY, tsa_ca_pem=ca)
        assert report.ok  # a note, not a verdict: archives made without a TSA have no token
        notes = report.files[0].notes
        assert any("no RFC 3161 token" in n and "other sessions of this namespace have one" in n for n in notes), notes
    finally:
        path.write_bytes(token)


def test_an_archive_without_a_tsa_notes_no_token(tmp_path):
    store = open_store((tmp_path / "cold").as_uri())
    _archive(tmp_path / "hot", store, None)
    report = verify_store(store, NS, POLICY)
    assert report.ok and all(any(n.startswith("no RFC 3161 token") for n in f.notes) for f in report.files)
    assert not any("other sessions" in n for f in report.files for n in f.notes)
