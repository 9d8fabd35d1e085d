"""`ledger rotate-remote` and the hot retention default, as an operator runs them.

Real processes (``python -m ledger.cli``) against a real ``file://`` store and moto's
S3 server over HTTP. Sessions are written by ``Ledger`` with its clock moved back
(days ago), so their seals and archived objects carry past times exactly as an old
session's would; everything after that (archive, view, rotate) runs unchanged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time as _time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from s3server import DeleteCounter

from ledger import Ledger
from ledger import writer as writer_mod
from ledger.cold.archive import Archiver
from ledger.cold.manifest import session_keys
from ledger.cold.remote import verify_store
from ledger.cold.stores import StoreOptions, open_store
from ledger.config import load_config
from ledger.keys import load_key_file, write_key_file
from ledger.reader import iter_lines, session_paths
from ledger.verify import Policy

NS = "edge-1"
BUCKET = "ledger-cold"
LOCKED_BUCKET = "ledger-locked"
PREFIX = "fleet"
DAY = 86400


class _ShiftedTime:
    """The ``time`` module as the writer sees it, ``offset`` seconds away (only ``time()``)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return _time.time() + self.offset

    def __getattr__(self, name: str):
        return getattr(_time, name)


def make_session(root: Path, key: bytes, days_ago: float, monkeypatch) -> str:
    """One sealed session written ``days_ago`` days in the past; returns its id."""
    before = {p.stem for p in session_paths(root / NS)} if (root / NS).is_dir() else set()
    with monkeypatch.context() as m:
        m.setattr(writer_mod, "time", _ShiftedTime(-days_ago * DAY))
        with Ledger.open(root, namespace=NS, hmac_key=key) as led:
            for i in range(5):
                assert led.record("conn.closed", {"i": i, "days_ago": days_ago})
    (new,) = [p.stem for p in session_paths(root / NS) if p.stem not in before]
    return new


def ledger(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


class Site:
    """A root whose sessions were sealed 40, 20 and 10 days ago, archived to ``store``
    (local copies deleted), plus the helpers to run and inspect rotate-remote."""

    def __init__(self, tmp_path: Path, kind: str, moto, monkeypatch, bucket: str = BUCKET, **options) -> None:
        self.kind = kind
        self.moto = moto
        self.key_file = tmp_path / "hmac.key"
        write_key_file(self.key_file)
        self.key = load_key_file(self.key_file)
        self.root = tmp_path / "root"
        if kind == "s3":
            self.url = f"s3://{bucket}/{PREFIX}"
            self.env = {"AWS_ENDPOINT_URL_S3": moto.endpoint}
            self.store = open_store(self.url, StoreOptions(endpoint_url=moto.endpoint, **options))
        else:
            self.url = (tmp_path / "cold").as_uri()
            self.env = {}
            self.store = open_store(self.url)
        self.sessions = {d: make_session(self.root, self.key, d, monkeypatch) for d in (40, 20, 10)}
        with Ledger.open(self.root, namespace=NS, hmac_key=self.key) as host:
            archiver = Archiver(self.root, NS, self.store, host, [self.key], hot_retention_s=0)
            try:
                assert archiver.run_once().errors == []
            finally:
                archiver.close()
        self.common = ["--root", str(self.root), "--namespace", NS, "--key-file", str(self.key_file)]

    def rotate(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return ledger("rotate-remote", *args, *self.common, "--store", self.url, env={**self.env, **(env or {})})

    def objects(self) -> set[str]:
        """Every key in the store, checkpoint notes included; not the namespace claim
        (``<ns>/owner.json``), which no rotation deletes."""
        return {i.key for i in self.store.list("") if not i.key.endswith("/owner.json")}

    def keys_of(self, *days: int) -> set[str]:
        """The objects the store holds for the sessions sealed ``days`` ago."""
        out = set()
        for d in days:
            s = self.sessions[d]
            k = session_keys(NS, s)
            out |= {k.gz, k.sha256, k.manifest}
            out |= {i.key for i in self.store.list(f"{NS}/checkpoints/{s}/")}
        return out

    def read(self, key: str) -> bytes:
        with self.store.open(key) as f:
            return f.read()

    def overwrite(self, key: str, data: bytes) -> None:
        """Replace an object behind the store's back (a plain PUT, no If-None-Match)."""
        if self.kind == "s3":
            self.moto.client().put_object(Bucket=self.store.bucket, Key=f"{self.store.prefix}/{key}", Body=data)
        else:
            (self.store.root / key).write_bytes(data)

    def remote_deleted_events(self) -> int:
        return sum(
            1 for p in session_paths(self.root / NS) for _, raw in iter_lines(p) if b'"kind":"remote.deleted"' in raw
        )


@pytest.fixture(params=["file", "s3"])
def site(request, tmp_path, monkeypatch):
    moto = request.getfixturevalue("s3") if request.param == "s3" else None
    return Site(tmp_path, request.param, moto, monkeypatch)


def listed(out: str, verb: str) -> set[str]:
    prefix = verb + " "
    return {line[len(prefix) :] for line in out.splitlines() if line.startswith(prefix)}


def test_a_bad_before_exits_2_with_one_line_and_deletes_nothing(site):
    """On main, "garbage" and "yesterday" sorted after every sealed_at: everything went."""
    held = site.objects()
    assert site.keys_of(40, 20, 10) <= held
    for bad in ("yesterday", "garbage", "", "10x", "2026-13-01", "2026-11", "20261123", "2026-11-23T20:00:00"):
        r = site.rotate("--before", bad)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert r.stderr.startswith("ledger: error: --before") and r.stderr.count("\n") == 1, (bad, r.stderr)
        assert r.stdout == "" and "Traceback" not in r.stderr
        assert site.objects() == held, bad
    assert site.remote_deleted_events() == 0


def test_spans_and_dates_select_exactly_the_sessions_sealed_before(site):
    """On main, "30d" sorted after "2026-..." (everything) and a date matched by text."""
    everything = site.objects()
    dry = site.rotate("--before", "30d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert listed(dry.stdout, "would delete") == site.keys_of(40)

    # a date alone is midnight UTC at its start: 15 days ago's date takes the 40- and 20-day-old
    date = (datetime.now(UTC) - timedelta(days=15)).strftime("%Y-%m-%d")
    dry = site.rotate("--before", date, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert listed(dry.stdout, "would delete") == site.keys_of(40, 20)
    hours = site.rotate("--before", f"{15 * 24}h", "--dry-run")
    assert listed(hours.stdout, "would delete") == site.keys_of(40, 20)
    assert site.objects() == everything  # dry runs touch nothing

    real = site.rotate("--before", date)
    assert real.returncode == 0, real.stderr
    gone = everything - site.objects()
    assert listed(real.stdout, "deleted") == gone == listed(dry.stdout, "would delete")
    # the shipped checkpoint notes went with their sessions; the 10-day-old one keeps its own
    for d in (40, 20):
        assert list(site.store.list(f"{NS}/checkpoints/{site.sessions[d]}/")) == []
    assert site.keys_of(10) <= site.objects() and any("/checkpoints/" in k for k in site.keys_of(10))
    assert site.rotate("--before", date, "--dry-run").stdout == ""  # nothing left to do


def test_a_forged_batch_view_cannot_make_a_fresh_session_due(site):
    """The view names candidates; the manifest as stored decides. On main a batch event
    claiming an old seal time had rotate delete a 10-day-old session at --before 30d."""
    from ledger import events as ev
    from ledger.projections import Projector

    with Projector(site.root, NS) as views:
        views.catch_up()
        real = {b.session: b for b in views.batches()}[site.sessions[10]]
    fields = {f: getattr(real, f) for f in ev.ArchiveBatch.__struct_fields__}
    forged = ev.ArchiveBatch(**{**fields, "batch_id": "forged-1", "sealed_at": "2001-01-01T00:00:00.000000Z"})
    # and one naming an old session but pointing at the fresh session's objects
    aimed = ev.ArchiveBatch(
        **{**fields, "batch_id": "forged-2", "session": site.sessions[20], "sealed_at": "2001-01-01T00:00:00.000000Z"}
    )
    with Ledger.open(site.root, namespace=NS, hmac_key=site.key) as led:
        assert led.record("archive.batch", forged) and led.record("archive.batch", aimed)
    fresh, oldest = site.keys_of(10), site.keys_of(40)
    before = site.objects()

    dry = site.rotate("--before", "30d", "--dry-run")
    r = site.rotate("--before", "30d")
    assert r.returncode == 2 and dry.returncode == 2, r.stderr
    assert listed(r.stdout, "deleted") == listed(dry.stdout, "would delete") == oldest
    assert before - site.objects() == oldest
    assert fresh <= site.objects()  # the fresh session is whole
    assert "its manifest says sealed at" in r.stderr and "Unverified" in r.stderr
    *kept, summary, last = r.stderr.splitlines()
    assert all(line.startswith("ledger: kept ") for line in kept) and summary.startswith("before ")
    assert last == f"ledger: error: {len(kept)} key(s) kept, not deleted"


def test_a_manifest_that_fails_its_mac_keeps_its_session_and_exits_1(site):
    """The stored evidence itself is bad: nothing of it is deleted on the view's word."""
    oldest, middle = site.keys_of(40), site.keys_of(20)
    manifest = session_keys(NS, site.sessions[40]).manifest
    edited = site.read(manifest).replace(b'"events":', b'"events":1')
    site.overwrite(manifest, edited)
    r = site.rotate("--before", "15d")
    assert r.returncode == 1, r.stderr
    assert listed(r.stdout, "deleted") == middle
    assert oldest <= site.objects()
    assert r.stderr.count(": BadManifest ") == len(oldest)


@pytest.mark.parametrize("kind", ["file"])
def test_a_cut_off_in_the_future_or_inside_the_hot_retention_needs_force(kind, tmp_path, monkeypatch):
    site = Site(tmp_path, kind, None, monkeypatch)
    held = site.objects()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    for before, why in (
        (tomorrow, "in the future"),
        ("2999-01-01T00:00:00Z", "in the future"),
        ("3d", "hot retention"),
    ):
        r = site.rotate("--before", before)
        assert r.returncode == 2 and why in r.stderr and "--force" in r.stderr, (before, r.stderr)
        assert r.stderr.count("\n") == 1 and site.objects() == held
    # the default retention is 7 days: 8d is allowed, 6d is not; a retention of 2 days allows 3d
    assert site.rotate("--before", "6d", "--dry-run").returncode == 2
    assert listed(site.rotate("--before", "8d", "--dry-run").stdout, "would delete") == site.keys_of(40, 20, 10)
    short = site.rotate("--before", "3d", "--dry-run", env={"LEDGER_HOT_RETENTION_DAYS": "2"})
    assert short.returncode == 0 and listed(short.stdout, "would delete") == site.keys_of(40, 20, 10)

    forced = site.rotate("--before", tomorrow, "--force")
    assert forced.returncode == 0, forced.stderr
    assert site.objects() == set() and listed(forced.stdout, "deleted") == held


def test_object_lock_kept_keys_exit_2_and_leave_no_delete_markers(s3, tmp_path, monkeypatch):
    """On main, a store opened without lock options (plain --store) "deleted" every locked
    object with a delete marker, exit 0: the bytes stayed, hidden from verify."""
    s3.create_bucket(LOCKED_BUCKET, object_lock=True)
    site = Site(
        tmp_path,
        "s3",
        s3,
        monkeypatch,
        bucket=LOCKED_BUCKET,
        object_lock_mode="GOVERNANCE",
        object_lock_days=1,
    )
    held = site.objects()
    versions = s3.versions(LOCKED_BUCKET)
    counter = DeleteCounter().attach(site.store.client)

    dry = site.rotate("--before", "30d", "--dry-run")
    assert dry.returncode == 2, dry.stderr
    assert listed(dry.stdout, "would delete") == set()
    assert dry.stderr.count("would keep") == len(site.keys_of(40)) and "ObjectLocked GOVERNANCE until" in dry.stderr

    real = site.rotate("--before", "30d")
    assert real.returncode == 2, real.stderr
    assert listed(real.stdout, "deleted") == set()
    kept = {line.split()[2].rstrip(":") for line in real.stderr.splitlines() if line.startswith("ledger: kept ")}
    assert kept == site.keys_of(40)
    assert f"0 key(s) deleted, {len(kept)} kept" in real.stderr
    assert s3.versions(LOCKED_BUCKET) == versions  # no delete marker, nothing removed
    assert site.objects() == held and counter.batches == []
    assert verify_store(site.store, NS, Policy(keys=(site.key,))).ok


def test_the_default_hot_retention_keeps_a_fresh_session_local(tmp_path):
    """On main the default was 0: the first archive deleted every archived local session."""
    assert load_config(env={}).cold.hot_retention_days == 7
    key_file = tmp_path / "hmac.key"
    write_key_file(key_file)
    root = tmp_path / "root"
    with Ledger.open(root, namespace=NS, hmac_key=load_key_file(key_file)) as led:
        led.record("conn.closed", {"i": 1})
    (fresh,) = session_paths(root / NS)
    common = ["--root", str(root), "--namespace", NS, "--key-file", str(key_file)]
    r = ledger("archive", *common, "--store", (tmp_path / "cold").as_uri())
    assert r.returncode == 0, r.stderr
    assert "archived 1 session(s)" in r.stderr
    assert "deleted 0 local session(s) (hot retention 7 days)" in r.stderr
    assert fresh.exists()
    helped = ledger("archive", "--help")
    assert "default 7" in " ".join(helped.stdout.split())
