"""The cold tier end to end: archive, crash, outage, tamper, lock, restore, rebuild, TSA.

Everything runs for real: sessions are written by ``Ledger``, objects go over HTTP to
moto's S3 server on 127.0.0.1 (one per module, ``reset()`` between tests) through
boto3 exactly as in production, crashes are SIGKILLs of a child process, and the
RFC 3161 timestamps come from ``openssl ts -reply`` behind a tiny HTTP server.

Most tests are parametrized over ``file`` (a directory under tmp_path) and ``s3``
(bucket ``ledger-cold``, prefix ``fleet``), like tests/test_stores.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import rfc3161_client
from s3server import DeleteCounter, FlakyProxy
from tsa import make_pki, tsa_server

from ledger import Ledger
from ledger import events as ev
from ledger.cold import archive
from ledger.cold.archive import Archiver, OffloadWorker, Recorder, from_config
from ledger.cold.manifest import capture_keys, encode_manifest, parse_manifest, session_keys, sha256_sidecar
from ledger.cold.remote import archived_lines, restore_session, rotate_remote, tier_report, verify_store
from ledger.cold.stores import StoreOptions, open_store
from ledger.config import load_config
from ledger.errors import InputError
from ledger.projections import HistoryNotVisible, Projector
from ledger.reader import decode_line, iter_lines, session_paths
from ledger.verify import Policy

KEY = bytes(range(32))
OTHER_KEY = bytes(range(100, 132))
NS = "edge-1"
BUCKET = "ledger-cold"
LOCKED_BUCKET = "ledger-locked"
PREFIX = "fleet"
POLICY = Policy(keys=(KEY,))


# ---- fixtures ---------------------------------------------------------------------------


class Backend:
    """Open a store of one kind, and reach behind it to inspect or tamper."""

    def __init__(self, kind: str, tmp_path: Path, moto=None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.moto = moto

    def url(self, bucket: str = BUCKET) -> str:
        if self.kind == "file":
            return (self.tmp_path / "cold" / PREFIX).as_uri()
        return f"s3://{bucket}/{PREFIX}"

    def endpoint(self) -> str:
        return self.moto.endpoint if self.kind == "s3" else ""

    def open(self, *, bucket: str = BUCKET, **options):
        if self.kind == "s3":
            options.setdefault("endpoint_url", self.moto.endpoint)
        return open_store(self.url(bucket), StoreOptions(**options))

    def keys(self, store) -> list[str]:
        """Keys of archived sessions and captures (the signed checkpoints shipped beside
        them, ``<ns>/checkpoints/``, and the namespace's ``owner.json`` are left out)."""
        return sorted(i.key for i in store.list("") if "/checkpoints/" not in i.key and "/" in i.key.split("/", 1)[1])

    def read(self, store, key: str) -> bytes:
        with store.open(key) as f:
            return f.read()

    def overwrite(self, store, key: str, data: bytes) -> None:
        """Replace an object behind the store's back (a plain PUT, no If-None-Match)."""
        if self.kind == "s3":
            self.moto.client().put_object(Bucket=store.bucket, Key=f"{store.prefix}/{key}", Body=data)
        else:
            (store.root / key).write_bytes(data)

    def seed(self, store, keys: list[str], body: bytes = b"x") -> None:
        """Many small objects, quickly, behind the store's back."""
        if self.kind == "s3":
            self.moto.seed(store.bucket, [f"{store.prefix}/{k}" for k in keys], body)
            return
        for k in keys:
            path = store.root / k
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)


@pytest.fixture(params=["file", "s3"])
def backend(request, tmp_path):
    moto = request.getfixturevalue("s3") if request.param == "s3" else None
    return Backend(request.param, tmp_path, moto)


# ---- helpers ----------------------------------------------------------------------------


def make_sessions(root: Path, n: int, *, ns: str = NS, key: bytes = KEY, events: int = 12, pad: int = 0) -> list[str]:
    """``n`` sealed sessions (one Ledger open/close each); returns the new session ids."""
    before = {p.stem for p in session_paths(root / ns)} if (root / ns).is_dir() else set()
    for i in range(n):
        with Ledger.open(root, namespace=ns, hmac_key=key) as led:
            for j in range(events):
                data = {"session_no": i, "i": j, "ip": f"10.0.{i}.{j}"}
                if pad:
                    data["pad"] = os.urandom(pad // 2).hex()
                assert led.record("conn.anomaly", data)
    return sorted(p.stem for p in session_paths(root / ns) if p.stem not in before)


def reference_gz(raw: bytes) -> bytes:
    """The deterministic gzip of SPEC.md section 8, built here independently: members of
    8 MiB raw bytes, each gzip with no name and mtime 0 at the archiver's level."""
    member = 8 * 2**20
    return b"".join(
        gzip.compress(raw[i : i + member], compresslevel=archive.GZIP_LEVEL, mtime=0)
        for i in range(0, max(len(raw), 1), member)
    )


def expected_keys(sessions, ns: str = NS, tsr: bool = False) -> list[str]:
    out = []
    for s in sessions:
        k = session_keys(ns, s)
        out += [k.gz, k.sha256, k.manifest] + ([k.tsr] if tsr else [])
    return sorted(out)


def history(root: Path, store, ns: str = NS) -> dict[str, list[bytes]]:
    """Every session's lines: the hot tier, and the cold tier for sessions deleted locally.

    A session in both tiers must have the same lines in both.
    """
    seen = {p.stem: [line for _, line in iter_lines(p)] for p in session_paths(root / ns)}
    for session, lines in archived_lines(store, ns):
        lines = list(lines)
        if session in seen:
            assert seen[session] == lines, f"{session}: hot and cold copies differ"
        else:
            seen[session] = lines
    return seen


def events_of(lines_by_session: dict[str, list[bytes]], kind: str) -> list:
    out = []
    for lines in lines_by_session.values():
        for line in lines:
            e = decode_line(line)
            if e.kind == kind:
                out.append(ev.decode(kind, e.data))
    return out


def hot_events(root: Path, kind: str, ns: str = NS) -> list:
    return events_of({p.stem: [x for _, x in iter_lines(p)] for p in session_paths(root / ns)}, kind)


def archive_all(root: Path, store, *, ns: str = NS, key: bytes = KEY, retention: float = 0.0, **kwargs):
    """One archive pass with a host writer of its own; returns the pass report."""
    with Ledger.open(root, namespace=ns, hmac_key=key) as host:
        archiver = Archiver(root, ns, store, host, [key], hot_retention_s=retention, **kwargs)
        try:
            return archiver.run_once()
        finally:
            archiver.close()


def reasons(report) -> dict[str, str | None]:
    """session id (from the file's URL) -> first error reason, for a VerifyReport."""
    out = {}
    for f in report.files:
        name = f.path.rsplit("/", 1)[-1]
        for suffix in (".ndjson.gz", ".manifest.json"):
            name = name.removesuffix(suffix)
        out[name] = f.first_error.reason if f.first_error else None
    return out


def outbox_gzips(root: Path, ns: str = NS) -> list[str]:
    """Gzip files (whole or temporary) the archiver left in ``<ns>/.outbox``."""
    return sorted(p.name for p in (root / ns / ".outbox").iterdir() if ".ndjson.gz" in p.name)


def wait_for(predicate, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# ---- archive round trip -----------------------------------------------------------------


def test_archive_round_trip_and_verify_store(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3, pad=200)
    originals = {s: (root / NS / f"{s}.ndjson").read_bytes() for s in sessions}
    store = backend.open()

    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        # Within the hot window: archived, kept locally.
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=86400)
        try:
            first = archiver.run_once()
        finally:
            archiver.close()
        assert first.errors == []
        assert [b.session for b in first.batches] == sessions
        assert first.local_deleted == [] and first.skipped == 3
        assert all((root / NS / f"{s}.ndjson").exists() for s in sessions)

        # Past it: nothing re-archived, every local copy deleted after a new HEAD-confirm.
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0)
        try:
            second = archiver.run_once()
            third = archiver.run_once()
        finally:
            archiver.close()
        assert second.errors == [] and second.batches == []
        assert [d.session for d in second.local_deleted] == sessions
        assert not any((root / NS / f"{s}.ndjson").exists() for s in sessions)
        assert (third.batches, third.local_deleted, third.skipped, third.errors) == ([], [], 0, [])
        assert outbox_gzips(root) == []
        host_session = host.current_session

    assert sorted(history(root, store)) == [*sessions, host_session]
    assert backend.keys(store) == expected_keys(sessions)

    batches = {b.session: b for b in events_of(history(root, store), "archive.batch")}
    for s in sessions:
        keys = session_keys(NS, s)
        gz = backend.read(store, keys.gz)
        assert gz == reference_gz(originals[s])  # deterministic: same session, same bytes
        assert gzip.decompress(gz) == originals[s]
        manifest_bytes = backend.read(store, keys.manifest)
        m = parse_manifest(manifest_bytes, [KEY])
        assert (m.namespace, m.session, m.first_seq, m.events) == (NS, s, 0, m.last_seq + 1)
        assert (m.session_bytes, m.session_sha256) == (len(originals[s]), hashlib.sha256(originals[s]).hexdigest())
        assert (m.gz_bytes, m.gz_sha256) == (len(gz), hashlib.sha256(gz).hexdigest())
        assert backend.read(store, keys.sha256) == sha256_sidecar(m.gz_sha256, keys.gz.rsplit("/", 1)[1])
        b = batches[s]
        assert (b.root, b.chain, b.events, b.manifest_key) == (m.root, m.chain, m.events, keys.manifest)
        assert b.manifest_sha256 == hashlib.sha256(manifest_bytes).hexdigest()
        assert [o.key for o in b.objects] == [keys.gz, keys.sha256, keys.manifest]

    if backend.kind == "file":  # the sidecar is a real `sha256sum -c` line
        day_dir = (store.root / session_keys(NS, sessions[0]).gz).parent
        check = subprocess.run(
            ["sha256sum", "-c", f"{sessions[0]}.sha256"], cwd=day_dir, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr

    report = verify_store(store, NS, POLICY)
    assert report.ok, [f.as_dict() for f in report.files if not f.ok]
    assert [f.session for f in report.files] == sessions
    assert all(f.sealed and f.signatures != "unchecked" for f in report.files)
    assert verify_store(store, None, POLICY).ok
    bad_key = verify_store(store, NS, Policy(keys=(OTHER_KEY,)))
    assert not bad_key.ok and set(reasons(bad_key).values()) == {"bad_manifest"}


# ---- crashes --------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from ledger import Ledger
    from ledger import events as ev
    from ledger.cold import archive
    from ledger.cold.stores import StoreOptions, open_store

    root, ns, url, endpoint, point, nth = sys.argv[1:7]
    nth = int(nth)
    key = bytes(range(32))
    calls = [0]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def tick():
        calls[0] += 1
        if calls[0] == nth:
            die()

    store = open_store(url, StoreOptions(endpoint_url=endpoint or None))
    if point == "put":  # after the nth object of a session is in the store
        put = store.put
        def patched_put(key, *a, **k):
            result = put(key, *a, **k)
            if "/sessions/" in key:  # not the signed checkpoints shipped first
                tick()
            return result
        store.put = patched_put
    elif point == "confirm":  # after the nth HEAD-confirmation (2nd: the one before deleting)
        confirm = archive.Archiver._confirm
        def patched_confirm(self, objects):
            confirm(self, objects)
            tick()
        archive.Archiver._confirm = patched_confirm
    elif point in ("batch", "local_deleted"):  # after the event is durable
        want = ev.ArchiveBatch if point == "batch" else ev.ArchiveLocalDeleted
        record = archive.Recorder.record
        def patched_record(self, event):
            record(self, event)
            if isinstance(event, want):
                tick()
        archive.Recorder.record = patched_record
    elif point == "unlinked":  # after the local file is gone
        delete_local = archive.Archiver.delete_local
        def patched_delete_local(self, *a, **kw):
            result = delete_local(self, *a, **kw)
            tick()
            return result
        archive.Archiver.delete_local = patched_delete_local
    elif point == "gzip":  # half-way through writing the gzip temp file
        write = archive._HashingWriter.write
        def patched_write(self, data):
            if len(data) > 20:  # a member: write half of it (past its header), then die
                write(self, data[: len(data) // 2])
                self.out.flush()
                os.fsync(self.out.fileno())
                tick()
            return write(self, data)
        archive._HashingWriter.write = patched_write
    else:
        sys.exit(f"unknown point {point}")

    led = Ledger.open(root, namespace=ns, hmac_key=key)
    archiver = archive.Archiver(root, ns, store, led, [key], hot_retention_s=0)
    archiver.run_once()
    print("the pass finished without reaching the crash point")
    sys.exit(3)
    """
)

CRASH_POINTS = [
    ("put", 1),  # gzip uploaded, nothing else
    ("put", 2),  # gzip and sidecar
    ("put", 3),  # every object, manifest last; not confirmed
    ("confirm", 1),  # confirmed, archive.batch not recorded
    ("batch", 1),  # archive.batch durable, local copy not touched
    ("confirm", 2),  # re-confirmed before deletion, archive.local_deleted not recorded
    ("local_deleted", 1),  # archive.local_deleted durable, file not unlinked
    ("unlinked", 1),  # first session fully done
    ("batch", 2),  # second session's batch durable
    ("put", 5),  # in the middle of the second session's uploads
    ("gzip", 1),  # a half-written gzip left in .outbox
]


def assert_no_unconfirmed_deletion(root: Path, store, sessions: list[str]) -> None:
    """A session missing locally must have its batch recorded and every object in the store."""
    batches = {b.session: b for b in hot_events(root, "archive.batch")}
    for s in sessions:
        if (root / NS / f"{s}.ndjson").exists():
            continue
        assert s in batches, f"{s} deleted locally without an archive.batch"
        for obj in batches[s].objects:
            info = store.head(obj.key)
            assert info is not None and info.size == obj.bytes, f"{obj.key} missing for deleted {s}"
            assert info.sha256 in (None, obj.sha256)


@pytest.mark.parametrize(("point", "nth"), CRASH_POINTS, ids=lambda v: str(v))
def test_crash_after_each_step_then_rerun(backend, tmp_path, point, nth):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3, pad=4000 if point == "gzip" else 0, events=60 if point == "gzip" else 12)
    originals = {s: (root / NS / f"{s}.ndjson").read_bytes() for s in sessions}
    store = backend.open()
    script = tmp_path / "crash_child.py"
    script.write_text(CHILD)

    child = subprocess.run(
        [sys.executable, str(script), str(root), NS, store.url, backend.endpoint(), point, str(nth)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, (
        f"child did not die at {point}#{nth}: {child.returncode}\n{child.stdout}{child.stderr}"
    )
    crashed = [p.stem for p in session_paths(root / NS) if p.stem not in sessions]
    assert len(crashed) == 1  # the killed writer's session, unsealed
    assert_no_unconfirmed_deletion(root, store, sessions)
    outbox = root / NS / ".outbox"
    if point == "gzip":
        (half,) = outbox.glob("*.ndjson.gz.tmp")
        half_size = half.stat().st_size
        assert 10 < half_size < len(reference_gz(originals[sessions[0]]))

    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        assert host.recovered["action"] == "sealed"  # the killed writer's session
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0)
        try:
            assert_no_unconfirmed_deletion(root, store, sessions)
            report = archiver.run_once()
            assert report.errors == []
            host_session = host.current_session
        finally:
            archiver.close()

    archived = sessions + crashed
    assert backend.keys(store) == expected_keys(archived)  # each session exactly once, nothing stray
    assert [p.stem for p in session_paths(root / NS)] == [host_session]  # every archived file deleted
    for s in sessions:  # a half-written gzip is never what got uploaded
        assert backend.read(store, session_keys(NS, s).gz) == reference_gz(originals[s])

    lines = history(root, store)
    assert set(lines) == set(archived) | {host_session}
    assert Counter(b.session for b in events_of(lines, "archive.batch")) == dict.fromkeys(archived, 1)
    deletions = Counter(d.session for d in events_of(lines, "archive.local_deleted"))
    assert set(deletions) == set(archived)
    # Recorded but not yet unlinked: the rerun records the deletion again (never the batch).
    assert sum(deletions.values()) == len(archived) + (point == "local_deleted")

    report = verify_store(store, NS, POLICY)
    assert report.ok, [f.as_dict() for f in report.files if not f.ok]
    assert [f.session for f in report.files] == archived
    assert report.files[-1].seal_reason == "recovered"
    assert outbox_gzips(root) == []  # nothing left behind


# ---- outage ---------------------------------------------------------------------------


def _holds_data(obj, skip=()) -> list[str]:
    """Attributes that hold bytes or a non-empty container (a queue of data would)."""
    out = []
    for name, value in vars(obj).items():
        if name in skip:
            continue
        if isinstance(value, bytes | bytearray | memoryview) or (isinstance(value, list | dict | set) and value):
            out.append(name)
    return out


def test_store_500s_and_outage_then_recovery(s3, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3)
    s3_client = s3.client()
    with FlakyProxy(s3.endpoint) as proxy, Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        store = open_store(
            f"s3://{BUCKET}/{PREFIX}",
            StoreOptions(endpoint_url=proxy.url, max_attempts=1, connect_timeout_s=1, read_timeout_s=5),
        )
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0)
        worker = OffloadWorker(archiver, interval_s=0.2, backoff_base_s=0.05, backoff_max_s=0.3)
        recorded = 0

        def keep_recording(seconds: float) -> None:
            nonlocal recorded
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for _ in range(20):
                    assert host.record("conn.anomaly", {"n": recorded})
                    recorded += 1
                time.sleep(0.01)

        def outage_checks() -> None:
            assert all((root / NS / f"{s}.ndjson").exists() for s in sessions)
            assert "Contents" not in s3_client.list_objects_v2(Bucket=BUCKET)
            # Memory flat cannot be measured reliably here; what can be: the worker holds
            # no data (its queue is a flag; passes read sealed files from disk) and the
            # outbox holds at most the one gzip being retried (no buffer that grows).
            assert _holds_data(worker) == []
            assert _holds_data(archiver, skip=("keys",)) == []
            assert len(outbox_gzips(root)) <= 1

        proxy.fail(None)  # every request: 500 InternalError
        worker.start()
        try:
            keep_recording(0.8)
            assert wait_for(lambda: worker.failures >= 3, 5)
            assert proxy.failed >= 3 and worker.passes == 0
            outage_checks()

            proxy.down()  # connections refused
            before = worker.failures
            keep_recording(0.8)
            assert wait_for(lambda: worker.failures >= before + 2, 5)
            outage_checks()

            proxy.passthrough()
            proxy.up()
            started = time.monotonic()
            drained = wait_for(lambda: not any((root / NS / f"{s}.ndjson").exists() for s in sessions), 10)
            took = time.monotonic() - started
        finally:
            worker.stop()
        assert drained and took < 5, f"not drained {took:.1f}s after the store came back"
        assert worker.failures == 0 and worker.last_report.errors == []
        assert host.flush(timeout=10)
        assert sum(host.dropped.values()) == 0 and recorded > 100
        host_session = host.current_session

    direct = open_store(f"s3://{BUCKET}/{PREFIX}", StoreOptions(endpoint_url=s3.endpoint))
    lines = history(root, direct)
    assert Counter(b.session for b in events_of(lines, "archive.batch")) == dict.fromkeys(sessions, 1)
    assert sum(1 for e in lines[host_session] if decode_line(e).kind == "conn.anomaly") == recorded
    assert verify_store(direct, NS, POLICY).ok


# ---- tampering ------------------------------------------------------------------------


def test_tampered_objects_are_detected(backend, tmp_path):
    root = tmp_path / "hot"
    ok, gz_flip, edited, sidecar, resigned = make_sessions(root, 5)
    store = backend.open()
    assert archive_all(root, store).errors == []
    assert verify_store(store, NS, POLICY).ok

    key = session_keys(NS, gz_flip).gz
    gz = bytearray(backend.read(store, key))
    gz[-8] ^= 0x01  # in the CRC-32 trailer (a flip inside the deflate data: see the test below)
    backend.overwrite(store, key, bytes(gz))

    key = session_keys(NS, edited).manifest
    data = backend.read(store, key)
    m = parse_manifest(data, [KEY])
    backend.overwrite(store, key, data.replace(b'"events":%d' % m.events, b'"events":%d' % (m.events + 1)))

    key = session_keys(NS, sidecar).sha256
    backend.overwrite(store, key, sha256_sidecar("0" * 64, session_keys(NS, sidecar).gz.rsplit("/", 1)[1]))

    key = session_keys(NS, resigned).manifest
    backend.overwrite(store, key, encode_manifest(parse_manifest(backend.read(store, key), [KEY]), OTHER_KEY))

    report = verify_store(store, NS, POLICY)
    assert not report.ok
    found = reasons(report)
    assert found[ok] is None
    assert found[gz_flip] in ("gz_mismatch", "bad_gzip")
    assert found[edited] == "bad_manifest"
    assert found[sidecar] == "bad_sidecar"
    assert found[resigned] == "bad_manifest"
    by_session = {name: f for name, f in zip(found, report.files, strict=True)}
    assert "not trusted" in by_session[resigned].first_error.detail
    assert "HMAC does not verify" in by_session[edited].first_error.detail
    # Trusting the other key too, the re-signed manifest is fine: only the trust failed.
    both = reasons(verify_store(store, NS, Policy(keys=(KEY, OTHER_KEY))))
    assert both[resigned] is None and both[edited] == "bad_manifest"


def test_a_deleted_gzip_is_reported_not_raised(tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3)
    store = open_store((tmp_path / "cold").as_uri())
    assert archive_all(root, store).errors == []
    (store.root / session_keys(NS, sessions[1]).gz).unlink()
    report = verify_store(store, NS, POLICY)
    found = reasons(report)
    assert not report.ok and found[sessions[0]] is None and found[sessions[1]] is not None


def test_corrupt_deflate_data_is_reported_as_bad_gzip(tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    store = open_store((tmp_path / "cold").as_uri())
    assert archive_all(root, store).errors == []
    path = store.root / session_keys(NS, sessions[1]).gz
    gz = bytearray(path.read_bytes())
    gz[10] |= 0x06  # first deflate block header: BTYPE 11, reserved ("invalid block type")
    path.write_bytes(bytes(gz))
    found = reasons(verify_store(store, NS, POLICY))
    assert found == {sessions[0]: None, sessions[1]: "bad_gzip"}


# ---- remote retention -----------------------------------------------------------------


def test_object_lock_keeps_objects_and_rotate_reports_them(s3, tmp_path):
    s3.create_bucket(LOCKED_BUCKET, object_lock=True)
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    store = open_store(
        f"s3://{LOCKED_BUCKET}/{PREFIX}",
        StoreOptions(endpoint_url=s3.endpoint, object_lock_mode="GOVERNANCE", object_lock_days=1),
    )
    counter = DeleteCounter().attach(store.client)
    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0)
        try:
            assert archiver.run_once().errors == []
            info = store.head(session_keys(NS, sessions[0]).gz)
            assert info.lock_mode == "GOVERNANCE" and info.retain_until > time.time() + 3600
            archiver.projector.catch_up()
            notes = sorted(i.key for i in store.list(f"{NS}/checkpoints/"))
            result = rotate_remote(archiver.projector, store, Recorder(host), before="9999-12-31", keys=[KEY])
            archiver.projector.catch_up()
            views = {b.session: b for b in archiver.projector.batches()}
        finally:
            archiver.close()

    assert result.batches == sessions
    assert result.deleted == []
    assert len(notes) == len(sessions)  # one shipped checkpoint note each, kept with its session
    assert sorted(k["key"] for k in result.kept) == sorted(expected_keys(sessions) + notes)
    # found locked by HEAD before deleting: no DeleteObjects sent (it would only add delete markers)
    assert {k["code"] for k in result.kept} == {"ObjectLocked"}
    assert counter.batches == []
    for s in sessions:
        assert views[s].state == "partly-deleted"
        assert views[s].kept == sorted(o.key for o in views[s].objects)
    remote = hot_events(root, "remote.deleted")
    assert [r.batch_ids for r in remote] == [[s] for s in sessions]  # one event per batch
    assert all(r.deleted == [] and len(r.kept) == 4 for r in remote)
    assert verify_store(store, NS, POLICY).ok  # nothing was removed


def test_rotate_without_lock_deletes_everything_in_chunks(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    store = backend.open()
    counter = DeleteCounter().attach(store.client) if backend.kind == "s3" else None
    captures = [f"20261123T2000{i // 100:02d}.{i:06d}Z-cap{i:04d}" for i in range(600)]
    capture_objects = [k for c in captures for k in capture_keys(NS, c)]
    backend.seed(store, capture_objects)
    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0)
        try:
            assert archiver.run_once().errors == []
            for c in captures:  # offloaded pcaps: 1,200 keys to delete in one capture chunk
                key, side = capture_keys(NS, c)
                assert host.record("capture.sealed", _capture_sealed(c, f"/caps/{c}.pcap", b"x"))
                off = ev.CaptureOffloaded(
                    capture_id=c, store=store.url, key=key, bytes=1, sha256=_sha(b"x"), sidecar_key=side
                )
                assert host.record("capture.offloaded", off)
            assert host.flush(timeout=10)
            archiver.projector.catch_up()
            first = rotate_remote(archiver.projector, store, Recorder(host), before="9999-12-31", keys=[KEY])
            archiver.projector.catch_up()
            views = archiver.projector.batches()
            caps = archiver.projector.captures()
            second = rotate_remote(archiver.projector, store, Recorder(host), before="9999-12-31", keys=[KEY])
        finally:
            archiver.close()
    notes = [k for k in first.deleted if "/checkpoints/" in k]

    assert first.batches == sessions and len(first.captures) == 600
    assert sorted(first.deleted) == sorted(expected_keys(sessions) + capture_objects + notes)
    assert first.kept == []
    assert backend.keys(store) == [] and len(notes) == len(sessions)
    assert list(store.list(f"{NS}/checkpoints/")) == []  # the shipped checkpoint notes went with them
    if counter is not None:
        assert max(counter.batches) <= 1000
        assert sum(counter.batches) == len(first.deleted)
        assert first.requests == len(counter.batches) == 4  # 4 + 4 + 1,000 + 200
    assert {b.state for b in views} == {"remote-deleted"}
    assert {c.state for c in caps} == {"remote-deleted"}
    assert (second.batches, second.captures, second.deleted, second.requests) == ([], [], [], 0)
    assert len(hot_events(root, "remote.deleted")) == 3  # two batches and one capture chunk, once


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _capture_started(cid: str, path: str) -> ev.CaptureStarted:
    return ev.CaptureStarted(
        capture_id=cid,
        cn="alice",
        ip="10.0.0.1",
        reason="anomaly",
        severity="high",
        path=path,
        interface="lo",
        duration_s=1.0,
        snaplen=96,
    )


def _capture_sealed(cid: str, path: str, data: bytes) -> ev.CaptureSealed:
    return ev.CaptureSealed(
        capture_id=cid,
        cn="alice",
        ip="10.0.0.1",
        reason="anomaly",
        path=path,
        bytes=len(data),
        sha256=_sha(data),
        started_at="2026-11-23T20:00:00.000000Z",
        duration_ms=1000,
    )


# ---- many hosts, restore, tiers, rebuild ----------------------------------------------


def test_two_hosts_share_one_bucket(s3, tmp_path):
    store = open_store(f"s3://{BUCKET}/{PREFIX}", StoreOptions(endpoint_url=s3.endpoint))
    hosts = {"edge-1": (tmp_path / "a", KEY), "edge-2": (tmp_path / "b", OTHER_KEY)}
    made = {}
    for ns, (root, key) in hosts.items():
        made[ns] = make_sessions(root, 2, ns=ns, key=key)
        assert archive_all(root, store, ns=ns, key=key).errors == []

    both = verify_store(store, None, Policy(keys=(KEY, OTHER_KEY)))
    assert both.ok and len(both.files) == 4
    assert sorted(f.session for f in both.files) == sorted(made["edge-1"] + made["edge-2"])
    keys = Backend("s3", tmp_path, s3).keys(store)
    assert keys == sorted(expected_keys(made["edge-1"], "edge-1") + expected_keys(made["edge-2"], "edge-2"))
    everything = [i.key for i in store.list("")]  # checkpoints included
    for ns in hosts:
        assert verify_store(store, ns, Policy(keys=(KEY, OTHER_KEY))).ok
        mine = [k for k in everything if any(s in k for s in made[ns])]
        assert mine and all(k.startswith(f"{ns}/") for k in mine)
    assert {k.split("/", 1)[0] for k in everything} == set(hosts)
    # Each namespace is signed by its own host's key.
    assert verify_store(store, "edge-1", Policy(keys=(KEY,))).ok
    assert set(reasons(verify_store(store, "edge-2", Policy(keys=(KEY,)))).values()) == {"bad_manifest"}
    with pytest.raises(InputError):
        verify_store(store, "edge-3", POLICY)


def test_restore_session_round_trip(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2, pad=300)
    originals = {s: (root / NS / f"{s}.ndjson").read_bytes() for s in sessions}
    store = backend.open()
    assert archive_all(root, store).errors == []
    assert not any((root / NS / f"{s}.ndjson").exists() for s in sessions)

    to = tmp_path / "restored"
    for s in sessions:
        dest, check = restore_session(store, NS, s, to, POLICY)
        assert dest == to / NS / f"{s}.ndjson"
        assert dest.read_bytes() == originals[s]
        assert check.ok and check.sealed and check.session == s
        assert dest.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InputError):
        restore_session(store, NS, sessions[0], to, POLICY)  # never overwrites
    with pytest.raises(InputError):
        restore_session(store, NS, "20261123T000000.000000Z-nothere", to, POLICY)
    assert sorted(p.name for p in (to / NS).iterdir()) == sorted(f"{s}.ndjson" for s in sessions)


def test_tier_report_joins_and_reports_a_gap(backend, tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3)
    store = backend.open()
    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        archiver = Archiver(root, NS, store, host, [KEY], hot_retention_s=0)
        try:
            assert archiver.run_once().errors == []
        finally:
            archiver.close()
        hot = host.current_session
        joined = tier_report(root, NS, store)
        assert (joined.oldest_hot, joined.newest_archived, joined.joined) == (hot, sessions[-1], True)
        assert f"links to archived {sessions[-1]}" in joined.detail

        result = store.delete_many(session_keys(NS, sessions[-1]).all())
        assert result.errors == []
        gap = tier_report(root, NS, store)
        assert (gap.oldest_hot, gap.newest_archived, gap.joined) == (hot, sessions[-2], False)
        assert "gap" in gap.detail and sessions[-1] in gap.detail


def test_rebuild_with_archived_sessions_covers_the_whole_history(backend, tmp_path):
    root = tmp_path / "hot"
    pcaps = tmp_path / "caps"
    pcaps.mkdir()
    for i, cid in enumerate(["20261123T200000.000000Z-c1", "20261123T200100.000000Z-c2"]):
        data = os.urandom(2000 + i)
        path = pcaps / f"{cid}.pcap"
        path.write_bytes(data)
        with Ledger.open(root, namespace=NS, hmac_key=KEY) as led:
            assert led.record("capture.started", _capture_started(cid, str(path)))
            assert led.record("conn.anomaly", {"i": i})
            assert led.record("capture.sealed", _capture_sealed(cid, str(path), data))
    sessions = [p.stem for p in session_paths(root / NS)]
    store = backend.open()
    report = archive_all(root, store)
    assert report.errors == [] and len(report.captures) == 2 and len(report.local_deleted) == 2
    assert not any((root / NS / f"{s}.ndjson").exists() for s in sessions)

    def cold():
        return archived_lines(store, NS)

    with Projector(root, NS, archived_sessions=cold) as p:
        p.catch_up()
        incremental = p.dump()
        r = p.rebuild()
        assert r.rebuilt and p.dump() == incremental  # rebuild from both tiers == what was followed
        views = {c.capture_id: c for c in p.captures()}
        assert {c: (v.state, v.cn, v.bytes > 0, v.remote_key is not None) for c, v in views.items()} == {
            c.capture_id: ("offloaded", "alice", True, True) for c in report.captures
        }
        assert sorted(b.session for b in p.batches()) == sessions
        assert all(p.batch_for_session(s).local_deleted for s in sessions)
    with Projector(root, NS) as p:  # the hot tier alone would drop the archived batches: refused
        with pytest.raises(HistoryNotVisible, match="would drop 2 archived batch"):
            p.rebuild()
        assert p.dump() == incremental  # nothing dropped
        p.rebuild(allow_loss=True)  # the operator's explicit choice: captures lose their origins
        assert {c.cn for c in p.captures()} == {""}


# ---- RFC 3161 -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    with tsa_server(pki) as server:
        yield pki, server


def _sha256_token(url: str, data: bytes) -> bytes:
    """A token over SHA-256(data) from the TSA, asked for as SPEC.md section 8.1 says."""
    req = (
        rfc3161_client.TimestampRequestBuilder()
        .data(data)
        .hash_algorithm(rfc3161_client.HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    http = urllib.request.Request(
        url, data=req.as_bytes(), headers={"Content-Type": "application/timestamp-query"}, method="POST"
    )
    with urllib.request.urlopen(http, timeout=30) as resp:
        assert resp.headers["Content-Type"] == "application/timestamp-reply"
        return resp.read()


def test_archive_with_a_real_tsa_stores_a_verifiable_token(tsa, tmp_path):
    pki, server = tsa
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    store = open_store((tmp_path / "cold").as_uri())
    report = archive_all(root, store, tsa_url=server.url)
    assert report.errors == []
    assert Backend("file", tmp_path).keys(store) == expected_keys(sessions, tsr=True)
    checked = verify_store(store, NS, POLICY, tsa_ca_pem=pki.ca_pem.read_bytes())
    assert checked.ok
    assert all(any(n.startswith("RFC 3161 timestamp ") for n in f.notes) for f in checked.files)


def test_verify_store_checks_timestamp_tokens(tsa, tmp_path):
    pki, server = tsa
    ca = pki.ca_pem.read_bytes()
    root = tmp_path / "hot"
    sessions = make_sessions(root, 3)
    store = open_store((tmp_path / "cold").as_uri())
    assert archive_all(root, store).errors == []
    manifests = {s: (store.root / session_keys(NS, s).manifest).read_bytes() for s in sessions}
    tokens = {s: _sha256_token(server.url, manifests[s]) for s in sessions}
    for s in sessions:
        (store.root / session_keys(NS, s).tsr).write_bytes(tokens[s])

    good = verify_store(store, NS, POLICY, tsa_ca_pem=ca)
    assert good.ok, [f.as_dict() for f in good.files if not f.ok]
    for f in good.files:
        (note,) = [n for n in f.notes if n.startswith("RFC 3161 timestamp ")]
        assert "not checked" not in note
    unchecked = verify_store(store, NS, POLICY)
    assert unchecked.ok and all(any("TSA certificate not checked" in n for n in f.notes) for f in unchecked.files)

    # A token over another manifest; a token from a TSA this CA never certified.
    (store.root / session_keys(NS, sessions[1]).tsr).write_bytes(tokens[sessions[0]])
    stranger = make_pki(tmp_path / "other-pki")
    with tsa_server(stranger) as other:
        (store.root / session_keys(NS, sessions[2]).tsr).write_bytes(_sha256_token(other.url, manifests[sessions[2]]))
    bad = verify_store(store, NS, POLICY, tsa_ca_pem=ca)
    found = reasons(bad)
    assert found == {sessions[0]: None, sessions[1]: "bad_timestamp", sessions[2]: "bad_timestamp"}
    details = {name: f.first_error.detail for name, f in zip(found, bad.files, strict=True) if f.first_error}
    assert "covers another digest" in details[sessions[1]]
    assert "does not verify" in details[sessions[2]]


def test_rerun_after_a_crash_past_the_tsr_upload_records_the_tsr(tsa, tmp_path):
    """The state a crash between the .tsr PUT and the manifest PUT leaves, rebuilt without the
    SHA-512 request bug in the way: manifests are deterministic and do not name the store,
    so archiving a copy of the hot tier elsewhere first gives the very manifest bytes."""
    pki, server = tsa
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    shutil.copytree(root, tmp_path / "copy")
    scratch = open_store((tmp_path / "scratch").as_uri())
    assert archive_all(tmp_path / "copy", scratch).errors == []
    store = open_store((tmp_path / "cold").as_uri())
    for s in sessions:
        keys = session_keys(NS, s)
        token = _sha256_token(server.url, (scratch.root / keys.manifest).read_bytes())
        store.put(keys.tsr, token, sha256=_sha(token))  # left by the crashed run

    assert archive_all(root, store, tsa_url=server.url).errors == []
    checked = verify_store(store, NS, POLICY, tsa_ca_pem=pki.ca_pem.read_bytes())
    assert checked.ok and all(any(n.startswith("RFC 3161") for n in f.notes) for f in checked.files)
    with Projector(root, NS) as p:
        p.catch_up()
        recorded = {b.session: [o.key for o in b.objects] for b in p.batches()}
        with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
            rotate_remote(p, store, Recorder(host), before="9999-12-31", keys=[KEY])
    leftover = Backend("file", tmp_path).keys(store)
    assert all(session_keys(NS, s).tsr in recorded[s] for s in sessions), recorded
    assert leftover == []


# ---- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"LEDGER_STORE": "ftp://x"}], ids=["no-store", "unknown-scheme"])
def test_from_config_disabled_or_misconfigured_warns_once(tmp_path, caplog, env):
    config = load_config(env={"LEDGER_ROOT": str(tmp_path), **env})
    with Ledger.open(tmp_path, namespace=NS, hmac_key=KEY) as host:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert from_config(config, host, [KEY]) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("ledger.cold")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "evidence stays on this host" in warnings[0].getMessage()


def test_from_config_file_store_starts_a_worker(tmp_path):
    root = tmp_path / "hot"
    sessions = make_sessions(root, 2)
    cold = tmp_path / "cold"
    env = {
        "LEDGER_ROOT": str(root),
        "LEDGER_STORE": cold.as_uri(),
        "LEDGER_ARCHIVE_INTERVAL_S": "0.2",
        "LEDGER_HOT_RETENTION_DAYS": "0",  # the default keeps them 7 days
    }
    config = load_config(env=env)
    with Ledger.open(root, namespace=NS, hmac_key=KEY) as host:
        worker = from_config(config, host, [KEY])
        try:
            assert isinstance(worker, OffloadWorker)
            assert worker.archiver.store.url == cold.as_uri()
            assert wait_for(lambda: worker.passes >= 1, 10)
            assert wait_for(lambda: not any((root / NS / f"{s}.ndjson").exists() for s in sessions), 10)
        finally:
            worker.stop()
    assert verify_store(open_store(cold.as_uri()), NS, POLICY).ok


# ---- timestamps without a CA; CA and keys from the configuration (issue 11, section 3) -----


def _cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.entry", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def _break_signature(token: bytes) -> bytes:
    """The token with one bit of its signature (the last bytes of the DER) flipped."""
    b = bytearray(token)
    b[-3] ^= 0x01
    return bytes(b)


@pytest.fixture
def stamped(tsa, tmp_path):
    """One archived session with a real token; the key file (0600) and the store."""
    pki, server = tsa
    root = tmp_path / "hot"
    (session,) = make_sessions(root, 1)
    store = open_store((tmp_path / "cold").as_uri())
    assert archive_all(root, store, tsa_url=server.url).errors == []
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    return store, store.root / session_keys(NS, session).tsr, key_file


def test_a_token_with_a_broken_signature_fails_without_a_ca(stamped):
    store, tsr, _ = stamped
    good = verify_store(store, NS, POLICY)
    assert good.ok
    (note,) = [n for n in good.files[0].notes if n.startswith("RFC 3161 timestamp ")]
    assert "imprint matches the manifest" in note
    assert "signature verified with the certificate the token carries (CN=ledger test TSA)" in note
    assert "TSA certificate not checked: no CA given" in note
    tsr.write_bytes(_break_signature(tsr.read_bytes()))
    bad = verify_store(store, NS, POLICY)
    err = bad.files[0].first_error
    assert err is not None and err.reason == "bad_timestamp", bad.files[0].as_dict()
    assert "signature does not verify with the certificate it carries" in err.detail


def test_verify_uses_the_tsa_ca_and_key_the_configuration_names(stamped, tsa, tmp_path):
    pki, _ = tsa
    store, tsr, key_file = stamped
    stranger = make_pki(tmp_path / "stranger")
    config = tmp_path / "ledger.toml"

    def configure(ca: Path) -> None:
        config.write_text(f'hmac_key_file = "{key_file}"\n[cold]\ntsa_ca_file = "{ca}"\n')

    configure(pki.ca_pem)
    ok = _cli("verify", "--config", config, "--json", store.url)
    assert ok.returncode == 0, ok.stderr
    (f,) = json.loads(ok.stdout)["files"]
    assert f["signatures"] == "verified" and f["signers"], f  # the config's HMAC key was used
    assert any("TSA certificate chain verified" in n for n in f["notes"]), f["notes"]
    configure(stranger.ca_pem)  # a CA that never certified this TSA: the config's CA is used
    bad = _cli("verify", "--config", config, "--json", store.url)
    assert bad.returncode == 1, bad.stderr
    err = json.loads(bad.stdout)["files"][0]["first_error"]
    assert err["reason"] == "bad_timestamp" and "against the TSA CA" in err["detail"]
    assert "ErrorStack" not in err["detail"] and "\n" not in err["detail"], err["detail"]
    # LEDGER_TSA_CA_FILE and LEDGER_HMAC_KEY_FILE, without a file
    env = {"LEDGER_TSA_CA_FILE": str(stranger.ca_pem), "LEDGER_HMAC_KEY_FILE": str(key_file)}
    assert _cli("verify", store.url, env=env).returncode == 1
    # a broken signature without any CA fails too
    tsr.write_bytes(_break_signature(tsr.read_bytes()))
    assert _cli("verify", "--key-file", key_file, store.url).returncode == 1


def test_tsa_ca_that_is_not_pem_is_a_usage_error(stamped, tmp_path):
    store, _, key_file = stamped
    not_pem = tmp_path / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x00 not a certificate")
    run = _cli("verify", "--key-file", key_file, "--tsa-ca", not_pem, store.url)
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: error: "), run.stderr
    assert "not a PEM certificate file" in lines[0] and "internal error" not in lines[0]


def test_verify_of_a_local_file_uses_the_config_hmac_key(tmp_path):
    root = tmp_path / "hot"
    (session,) = make_sessions(root, 1)
    key_file = tmp_path / "hmac.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    config = tmp_path / "ledger.toml"
    config.write_text(f'hmac_key_file = "{key_file}"\n')
    path = root / NS / f"{session}.ndjson"
    with_config = _cli("verify", "--config", config, path)
    assert with_config.returncode == 0 and "NOT checked" not in with_config.stderr, with_config.stderr
    other = tmp_path / "other.key"
    other.write_text(bytes(32).hex() + "\n")
    other.chmod(0o600)
    config.write_text(f'hmac_key_file = "{other}"\n')
    assert _cli("verify", "--config", config, path).returncode == 1  # a key the session was not signed with
