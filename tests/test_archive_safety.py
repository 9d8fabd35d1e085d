"""Archive decides from verified bytes, never from local bookkeeping (issue 12, items 2 and 3).

Each test plays the insider or the accident the issue names, against real session
files written by ``Ledger``, a real ``file://`` store and moto's S3 over HTTP on
127.0.0.1, through the library and through the ``ledger`` command as an operator runs
it:

* a forged seal record (an event edited, the chain recomputed without the key, the
  writer's ``.seals/<session>.json`` updated to match): nothing uploaded or deleted,
  exit 1 naming the session;
* a corrupt batch view: no local deletion unless the session's own objects are
  verified in the store;
* objects deleted from the store: uploaded again;
* ``ledger rebuild`` without a store after archival: refused, the views untouched;
* an unreachable store: no new session file;
* ``restore`` onto a full tmpfs: no ``.restore.tmp`` left, one error line naming it;
* two roots on one namespace: the second refused (exit 2) before anything is uploaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from test_cold import KEY, POLICY, Backend, archive_all, make_sessions, reference_gz

from ledger import Ledger
from ledger import format as fmt
from ledger.cold.archive import Archiver
from ledger.cold.manifest import owner_key, session_keys
from ledger.cold.owner import NamespaceOwned
from ledger.cold.remote import restore_session, verify_store
from ledger.config import default_namespace
from ledger.errors import InputError
from ledger.identity import ID_FILE
from ledger.keys import load_key_file, write_key_file
from ledger.projections import BatchView, Projector, _Txn
from ledger.reader import decode_line, session_paths
from ledger.session import SessionBuilder
from ledger.verify import Policy
from ledger.writer import SEALS_DIR, SealRecord

NS = "edge-1"
ATTACKER_KEY = bytes(range(200, 232))


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path):
    moto = request.getfixturevalue("s3") if request.param == "s3" else None
    return Backend(request.param, tmp_path, moto)


def ledger_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def cli_env(backend: Backend) -> dict:
    # Retention 0: these tests are about what a run may delete, so everything archived is due.
    env = {"LEDGER_HOT_RETENTION_DAYS": "0"}
    if backend.kind == "s3":
        env["AWS_ENDPOINT_URL_S3"] = backend.endpoint()
    return env


def all_keys(store) -> list[str]:
    """Every key in the store, checkpoints and owner objects included."""
    return sorted(i.key for i in store.list(""))


def forge(root: Path, session: str, *, ns: str = NS) -> bytes:
    """The insider without the key: edit one event, rebuild the chain and tree (signing
    with a key of their own), and update the writer's seal record to match."""
    path = root / ns / f"{session}.ndjson"
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    opened = fmt.decode_opened(bytes(decode_line(lines[0]).data))
    b = SessionBuilder(ns, session, [ATTACKER_KEY], prev=opened.prev)
    out = [b.opened_line(decode_line(lines[0]).ts)]
    edited = False
    for raw in lines[1:]:
        e = decode_line(raw)
        if e.kind == fmt.KIND_CHECKPOINT:
            out.append(b.checkpoint_line(e.ts))
        elif e.kind == "session.sealed":
            out.append(b.seal_line(e.ts, "closed", 0))
        else:
            data = bytes(e.data)
            if not edited and b'"ip"' in data:
                data = data.replace(b'"ip":"10.0.', b'"ip":"10.9.', 1)  # the forgery
                edited = True
            out.append(b.line(e.kind, data, e.ts))
    assert edited
    forged = b"".join(x if x.endswith(b"\n") else x + b"\n" for x in out)
    path.write_bytes(forged)
    link = b.summary()
    record = SealRecord(
        session=session,
        size=link.size,
        root=link.root,
        chain=link.chain,
        bytes=len(forged),
        sha256=hashlib.sha256(forged).hexdigest(),
    )
    (root / ns / SEALS_DIR / f"{session}.json").write_bytes(msgspec.json.encode(record) + b"\n")
    return forged


@pytest.fixture
def keyed(tmp_path):
    key_file = tmp_path / "hmac.key"
    write_key_file(key_file)
    return key_file, load_key_file(key_file)


# ---- 2a: a forged seal record ------------------------------------------------------------


def test_forged_seal_record_is_never_archived(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    forged = forge(root, sessions[0])
    store = backend.open()

    report = archive_all(root, store, retention=0)
    path = root / NS / f"{sessions[0]}.ndjson"
    assert path.read_bytes() == forged  # left in place, byte for byte
    assert any(str(path) in e and "does not verify" in e for e in report.evidence), report.errors
    assert not any(sessions[0] in k for k in all_keys(store))  # no gzip, manifest or checkpoint of it
    assert [b.session for b in report.batches][:1] == [sessions[1]]  # the good one still goes
    assert not (root / NS / f"{sessions[1]}.ndjson").exists()
    assert verify_store(store, NS, POLICY).ok


def test_forged_seal_record_cli_exits_1_naming_it(backend, tmp_path, keyed):
    key_file, key = keyed
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2, key=key)
    forged = forge(root, sessions[1])
    store = backend.open()
    r = ledger_cli(
        "archive", "--root", str(root), "--namespace", NS, "--key-file", str(key_file), "--store", backend.url(),
        env=cli_env(backend),
    )  # fmt: skip
    path = root / NS / f"{sessions[1]}.ndjson"
    assert r.returncode == 1, r.stderr
    assert str(path) in r.stderr and "does not verify" in r.stderr and "Traceback" not in r.stderr
    assert path.read_bytes() == forged
    assert not any(sessions[1] in k for k in all_keys(store))


# ---- 2b: a wrong view, a store that lost objects -----------------------------------------


def _plant_batch(root: Path, session: str, like: BatchView) -> None:
    """Corrupt the LMDB batch view: claim ``session`` archived, pointing at the objects of
    another session that really is in the store (so HEADs of the view's keys succeed)."""
    with Projector(root, NS) as p:
        with p.env.begin(write=True) as txn:
            fake = msgspec.structs.replace(like, batch_id=session, session=session, local_deleted=False)
            _Txn(txn, p.dbs).put_batch(fake)
        assert p.batch_for_session(session).objects == like.objects


def test_corrupt_view_never_deletes_a_session_that_is_not_in_the_store(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    originals = {s: (root / NS / f"{s}.ndjson").read_bytes() for s in sessions}
    store = backend.open()
    # Archive the first (kept locally), then the view lies about the second.
    first = archive_all(root, store, retention=86400)
    assert first.errors == []
    store.delete_many(session_keys(NS, sessions[1]).all())
    with Projector(root, NS) as p:
        p.catch_up()
        genuine = p.batch_for_session(sessions[0])
    _plant_batch(root, sessions[1], genuine)

    report = archive_all(root, store, retention=0)
    assert report.errors == []
    for s in sessions:
        if (root / NS / f"{s}.ndjson").exists():
            continue
        # Deleted locally: its own objects, derived from it, are in the store and verify.
        keys = session_keys(NS, s)
        assert backend.read(store, keys.gz) == reference_gz(originals[s])
        assert gzip.decompress(backend.read(store, keys.gz)) == originals[s]
    assert sessions[1] in report.reuploaded  # the view disagreed with the store: recorded again
    assert verify_store(store, NS, POLICY).ok
    with Projector(root, NS) as p:
        p.catch_up()
        assert p.batch_for_session(sessions[1]).objects[0].key == session_keys(NS, sessions[1]).gz


def test_objects_lost_from_the_store_are_uploaded_again(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3)
    originals = {s: (root / NS / f"{s}.ndjson").read_bytes() for s in sessions}
    store = backend.open()
    assert archive_all(root, store, retention=86400).errors == []

    # A lifecycle rule or an operator removed objects: within retention, a pass puts them back.
    store.delete_many([session_keys(NS, sessions[0]).gz, session_keys(NS, sessions[2]).manifest])
    kept = archive_all(root, store, retention=86400)
    assert kept.errors == [] and sorted(kept.reuploaded) == [sessions[0], sessions[2]]
    assert all((root / NS / f"{s}.ndjson").exists() for s in sessions)
    assert verify_store(store, NS, POLICY).ok

    # Lost again just before the pass that deletes: re-uploaded, confirmed, then deleted.
    store.delete_many(session_keys(NS, sessions[1]).all())
    due = archive_all(root, store, retention=0)
    assert due.errors == [] and sessions[1] in due.reuploaded
    assert not any((root / NS / f"{s}.ndjson").exists() for s in sessions)
    for s in sessions:
        assert gzip.decompress(backend.read(store, session_keys(NS, s).gz)) == originals[s]
    assert verify_store(store, NS, POLICY).ok


def test_deleting_after_a_key_rotation_keeps_the_earlier_manifest(backend, tmp_path):
    """Re-shipping before deletion, under a new first key, adopts the manifest already
    stored (its MAC verifies with a key still held, same content) instead of conflicting."""
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    store = backend.open()
    assert archive_all(root, store, retention=86400).errors == []
    before = {s: backend.read(store, session_keys(NS, s).manifest) for s in sessions}
    new_key = bytes(range(50, 82))
    with Ledger.open(root, namespace=NS, hmac_key=new_key, extra_keys=(KEY,)) as host:
        archiver = Archiver(root, NS, store, host, [new_key, KEY], hot_retention_s=0)
        try:
            report = archiver.run_once()
        finally:
            archiver.close()
    assert report.errors == [] and report.reuploaded == []
    assert set(sessions) <= {d.session for d in report.local_deleted}
    assert {s: backend.read(store, session_keys(NS, s).manifest) for s in sessions} == before
    assert verify_store(store, NS, Policy(keys=(KEY, new_key))).ok


# ---- 2c: rebuild ------------------------------------------------------------------------


def test_rebuild_without_store_after_archival_is_refused(backend, tmp_path, keyed):
    key_file, key = keyed
    root = tmp_path / "hot"
    make_sessions(root, 3, key=key)
    backend.open()
    env = cli_env(backend)
    common = ["--root", str(root), "--namespace", NS]
    r = ledger_cli("archive", *common, "--key-file", str(key_file), "--store", backend.url(), env=env)
    assert r.returncode == 0, r.stderr
    before = ledger_cli("batches", *common, "--json").stdout
    assert before.count('"batch_id"') == 3

    refused = ledger_cli("rebuild", *common, env=env)
    assert refused.returncode == 2, refused.stderr
    assert "would drop 3 archived batch(es)" in refused.stderr and refused.stderr.count("\n") == 1
    assert ledger_cli("batches", *common, "--json").stdout == before  # nothing dropped

    # The views gone altogether: the oldest local session still says history came before it.
    for f in (root / NS / ".views").iterdir():
        f.unlink()
    refused = ledger_cli("rebuild", *common, env=env)
    assert refused.returncode == 2 and "not here" in refused.stderr, refused.stderr

    # The configured store is used by default, and the summary says what came from where.
    ok = ledger_cli("rebuild", *common, env={**env, "LEDGER_STORE": backend.url()})
    assert ok.returncode == 0, ok.stderr
    assert f"3 archived session(s) from {backend.url()}" in ok.stderr
    assert "1 local session(s) from" in ok.stderr and "3 batches" in ok.stderr
    assert ledger_cli("batches", *common, "--json").stdout.count('"batch_id"') == 3


# ---- 2d: a failed run leaves no trace -----------------------------------------------------


def test_unreachable_store_leaves_no_new_session(tmp_path, keyed, s3):
    key_file, key = keyed
    root = tmp_path / "hot"
    make_sessions(root, 2, key=key)
    before = sorted(p.name for p in (root / NS).iterdir())
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = tmp_path / "ledger.toml"
    config.write_text("[cold.s3]\nmax_attempts = 1\nconnect_timeout_s = 1\n")
    common = ["--root", str(root), "--namespace", NS, "--key-file", str(key_file), "--config", str(config)]
    cases = [
        ("s3://ledger-cold/fleet", {"AWS_ENDPOINT_URL_S3": dead}, "cannot reach"),
        ("s3://no-such-bucket/fleet", {"AWS_ENDPOINT_URL_S3": s3.endpoint}, "does not exist"),
        ((tmp_path / "a-file").as_uri() + "/cold", {}, "a-file"),
    ]
    (tmp_path / "a-file").write_text("not a directory")
    for url, env, said in cases:
        for _ in range(2):
            r = ledger_cli("archive", *common, "--store", url, env=env)
            assert r.returncode == 2, (url, r.stderr)
            assert said in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert sorted(p.name for p in (root / NS).iterdir()) == before, url  # no session, no views


def _mount_tmpfs(path: Path, size: str = "4m") -> None:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")


def test_restore_onto_a_full_tmpfs_leaves_no_temp_file(backend, tmp_path, keyed):
    key_file, key = keyed
    root = tmp_path / "hot"
    (session,) = make_sessions(root, 1, key=key, events=700, pad=8000)  # about 6 MB: more than the tmpfs
    store = backend.open()
    assert archive_all(root, store, key=key).errors == []
    full = tmp_path / "full"
    _mount_tmpfs(full)
    try:
        with pytest.raises(InputError, match=f"cannot write {full / NS / session}.ndjson"):
            restore_session(store, NS, session, full, Policy(keys=(key,)))
        assert [p.name for p in (full / NS).iterdir()] == []
        r = ledger_cli(
            "restore", session, "--to", str(full), "--root", str(root), "--namespace", NS,
            "--key-file", str(key_file), "--store", backend.url(), env=cli_env(backend),
        )  # fmt: skip
        assert r.returncode == 2 and str(full / NS) in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert [p.name for p in (full / NS).iterdir()] == []  # no .restore.tmp
    finally:
        subprocess.run(["umount", str(full)], check=False)


# ---- 3: two roots, one namespace ----------------------------------------------------------


def test_two_roots_on_one_namespace_second_is_refused(backend, tmp_path, keyed):
    key_file, key = keyed
    a, b = tmp_path / "a", tmp_path / "b"
    made_a = make_sessions(a, 2, key=key)
    made_b = make_sessions(b, 2, key=key)
    store = backend.open()
    env = cli_env(backend)

    first = ledger_cli(
        "archive", "--root", str(a), "--namespace", NS, "--key-file", str(key_file), "--store", backend.url(), env=env
    )
    assert first.returncode == 0, first.stderr
    ident = (a / ID_FILE).read_text().strip()
    assert (a / ID_FILE).stat().st_mode & 0o777 == 0o600
    assert f'"owner":"{ident}"' in backend.read(store, owner_key(NS)).decode()
    stored = all_keys(store)

    second = ledger_cli(
        "archive", "--root", str(b), "--namespace", NS, "--key-file", str(key_file), "--store", backend.url(), env=env
    )
    assert second.returncode == 2, second.stderr
    assert f"belongs to root {ident}" in second.stderr and second.stderr.count("\n") == 1
    assert all_keys(store) == stored  # nothing uploaded, not even a checkpoint
    assert sorted(p.stem for p in session_paths(b / NS)) == made_b  # nothing deleted, no new session

    with pytest.raises(NamespaceOwned):  # the library path (a host's offload worker) too
        archive_all(b, store, key=key)
    assert all_keys(store) == stored

    # The owner again, after a restart: its identity survived in the root.
    again = ledger_cli(
        "archive", "--root", str(a), "--namespace", NS, "--key-file", str(key_file), "--store", backend.url(), env=env
    )
    assert again.returncode == 0, again.stderr
    assert (a / ID_FILE).read_text().strip() == ident
    assert not any((a / NS / f"{s}.ndjson").exists() for s in made_a)

    # host_id in the configuration sets the identity (a root that moved to a new disk).
    config = tmp_path / "ledger.toml"
    config.write_text(f'host_id = "{ident}"\n')
    moved = ledger_cli(
        "archive", "--root", str(b), "--namespace", NS, "--key-file", str(key_file), "--store", backend.url(),
        "--config", str(config), env=env,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr


def test_default_namespace_is_the_full_host_name(monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "edge-1.eu")
    assert default_namespace() == "edge-1.eu"
    monkeypatch.setattr(socket, "gethostname", lambda: "edge-1.us")
    assert default_namespace() == "edge-1.us"


def test_default_namespace_is_used_by_the_writer(monkeypatch, tmp_path):
    monkeypatch.setattr(socket, "gethostname", lambda: "edge-1.eu")
    with Ledger.open(tmp_path, hmac_key=bytes(range(32))) as led:
        assert led.namespace == "edge-1.eu"


def test_archive_on_a_full_disk_leaves_no_partial_gzip(tmp_path, keyed):
    """The outbox gzip does not fit: the run names the file, leaves nothing half-written,
    deletes nothing, and the next run (with room again) archives the session."""
    key_file, key = keyed
    src = tmp_path / "src"
    (session,) = make_sessions(src, 1, key=key, events=300, pad=8000)  # about 2.5 MB, its gzip about 1.3 MB
    full = tmp_path / "full"
    _mount_tmpfs(full, "3m")
    try:
        root = full / "root"
        shutil.copytree(src, root)
        original = (root / NS / f"{session}.ndjson").read_bytes()
        store = Backend("file", tmp_path).open()
        report = archive_all(root, store, key=key)
        assert len(report.errors) == 1 and f"cannot write {root / NS / '.outbox'}" in report.errors[0], report.errors
        assert report.evidence == [] and report.local_deleted == []
        assert (root / NS / f"{session}.ndjson").read_bytes() == original
        assert list((root / NS / ".outbox").glob("*.ndjson.gz*")) == []
        assert not any(session in k for k in all_keys(store) if "/checkpoints/" not in k)
    finally:
        subprocess.run(["umount", str(full)], check=False)
