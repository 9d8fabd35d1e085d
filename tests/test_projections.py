"""Projections: folds over real ledger files, catch-up equals rebuild byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Ledger
from ledger import events as ev
from ledger.projections import Projector
from ledger.reader import session_paths

KEY = bytes(range(32))


def _started(cid: str) -> ev.CaptureStarted:
    return ev.CaptureStarted(
        capture_id=cid,
        cn="alice",
        ip="10.0.0.1",
        reason="anomaly",
        severity="high",
        path=f"/caps/{cid}.pcap",
        interface="lo",
        duration_s=1.0,
        snaplen=96,
    )


def _sealed(cid: str, n: int) -> ev.CaptureSealed:
    return ev.CaptureSealed(
        capture_id=cid,
        cn="alice",
        ip="10.0.0.1",
        reason="anomaly",
        path=f"/caps/{cid}.pcap",
        bytes=100 + n,
        sha256=f"{n:064x}",
        started_at="2026-11-23T20:00:00.000000Z",
        duration_ms=1000,
    )


def _batch(bid: str, session: str) -> ev.ArchiveBatch:
    obj = ev.StoredObject(key=f"ns/sessions/{session}.ndjson.gz", bytes=10, sha256="ab" * 32)
    return ev.ArchiveBatch(
        batch_id=bid,
        store="file:///cold",
        session=session,
        first_seq=0,
        last_seq=9,
        events=10,
        root="00" * 32,
        chain="11" * 32,
        sealed_at="2026-11-23T20:00:00.000000Z",
        manifest_key=f"ns/sessions/{session}.manifest.json",
        manifest_sha256="cd" * 32,
        objects=[obj],
    )


def record(led: Ledger, e) -> None:
    assert led.record(ev.kind_of(e), e)


def test_pointer_view_follows_capture_lifecycle(tmp_path):
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("c1"))
        record(led, _sealed("c1", 1))
        record(led, _started("c2"))
        record(led, ev.CaptureFailed(capture_id="c2", cn="bob", ip="10.0.0.2", reason="r", cause="tcpdump exited 1"))
        record(led, _started("c3"))
        record(led, _sealed("c3", 3))
        record(
            led,
            ev.CaptureOffloaded(
                capture_id="c3",
                store="file:///c",
                key="n1/captures/c3.pcap",
                bytes=103,
                sha256="00" * 32,
                sidecar_key="n1/captures/c3.pcap.sha256",
            ),
        )
        record(
            led, ev.CaptureEvicted(capture_id="c3", path="/caps/c3.pcap", bytes=103, reason="max_files", offloaded=True)
        )
        record(led, _started("c4"))
        record(led, _sealed("c4", 4))
        record(
            led,
            ev.CaptureEvicted(capture_id="c4", path="/caps/c4.pcap", bytes=104, reason="max_bytes", offloaded=False),
        )
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert r.rebuilt and r.applied > 10
        views = {c.capture_id: c for c in p.captures()}
    assert views["c1"].state == "local" and views["c1"].local and views["c1"].bytes == 101
    assert views["c2"].state == "failed" and views["c2"].cause == "tcpdump exited 1"
    assert (
        views["c3"].state == "offloaded" and not views["c3"].local and views["c3"].remote_key == "n1/captures/c3.pcap"
    )
    assert views["c4"].state == "evicted" and not views["c4"].local


def test_batch_view_and_remote_deletion(tmp_path):
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        record(led, _batch("b1", "s1"))
        record(led, _batch("b2", "s2"))
        record(led, ev.ArchiveLocalDeleted(batch_id="b1", session="s1", path="/x/s1.ndjson", bytes=10))
        record(
            led,
            ev.RemoteDeleted(
                store="file:///cold",
                before="2026-11-24",
                batch_ids=["b1", "b2"],
                deleted=["ns/sessions/s1.ndjson.gz"],
                kept=[{"key": "ns/sessions/s2.ndjson.gz", "error": "AccessDenied"}],
            ),
        )
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
        b = {x.batch_id: x for x in p.batches()}
        assert b["b1"].local_deleted and b["b1"].state == "remote-deleted"
        assert b["b2"].state == "partly-deleted" and b["b2"].kept == ["ns/sessions/s2.ndjson.gz"]
        assert p.batch_for_session("s2").batch_id == "b2"


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=5, max_size=60), st.randoms())
def test_catch_up_equals_rebuild_after_random_interleavings(tmp_path_factory, ops, rnd):
    """Events, flushes, catch-ups and rotations in random order: the incremental view
    and a full rebuild are byte-for-byte identical."""
    root = tmp_path_factory.mktemp("interleave")
    led = Ledger.open(root, namespace="n1", hmac_key=KEY, rotate_bytes=4096)
    p = Projector(root, "n1")
    live: list[str] = []
    try:
        for i, op in enumerate(ops):
            cid = f"c{i:04d}"
            if op <= 1:
                record(led, _started(cid))
                record(led, _sealed(cid, i))
                live.append(cid)
            elif op == 2 and live:
                victim = live.pop(rnd.randrange(len(live)))
                record(
                    led, ev.CaptureEvicted(capture_id=victim, path="p", bytes=1, reason="max_files", offloaded=False)
                )
            elif op == 3:
                record(led, _batch(f"b{i}", f"s{i}"))
            elif op == 4:
                led.flush()
                p.catch_up()
            else:
                led.record("conn.anomaly", {"i": i, "pad": "x" * rnd.randrange(400)})
        led.close()
        p.catch_up()
        incremental = p.dump()
    finally:
        led.close()
        p.close()
    with Projector(root, "n1") as q:
        q.rebuild()
        assert q.dump() == incremental


def test_catch_up_rebuilds_when_chain_at_position_changed(tmp_path):
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY, checkpoint_every=1000) as led:
        for i in range(5):
            record(led, _started(f"c{i}"))
        led.flush()
        with Projector(tmp_path, "n1") as p:
            p.catch_up()
            pos = p.position()
        assert not pos.sealed
    # Flip the stored chain of the line the view stopped at.
    path = tmp_path / "n1" / f"{pos.session}.ndjson"
    lines = path.read_bytes().split(b"\n")
    line = lines[pos.seq]
    lines[pos.seq] = line[:-3] + (b"0" if line[-3:-2] != b"0" else b"1") + line[-2:]
    path.write_bytes(b"\n".join(lines))
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
    assert r.rebuilt and "history changed" in r.reason


def test_catch_up_after_sealed_session_deleted(tmp_path):
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("c1"))
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
    first = session_paths(tmp_path / "n1")[0]
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("c2"))
    first.unlink()  # archived and deleted locally
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert not r.rebuilt
        assert {c.capture_id for c in p.captures()} == {"c1", "c2"}


def test_missing_namespace_is_an_input_error(tmp_path):
    from ledger.errors import InputError

    with pytest.raises(InputError):
        Projector(tmp_path, "nope")


def test_views_directory_is_private(tmp_path):
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY):
        pass
    with Projector(tmp_path, "n1"):
        pass
    assert (tmp_path / "n1" / ".views").stat().st_mode & 0o777 == 0o700


def test_rebuild_uses_archived_sessions(tmp_path):
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("old"))
    first = session_paths(tmp_path / "n1")[0]
    archived = first.read_bytes()
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("new"))
    first.unlink()

    def from_cold():
        yield first.stem, iter(archived.split(b"\n")[:-1])

    with Projector(tmp_path, "n1", archived_sessions=from_cold) as p:
        p.rebuild()
        assert {c.capture_id for c in p.captures()} == {"old", "new"}


# ---- a rewritten past: an insider with the key re-signs an earlier, folded session ----


def _forge(path, old: bytes, new: bytes) -> None:
    """Rewrite a sealed session as a key holder would: edit ``old`` to ``new`` (same
    length) in one event's data, recompute every hash, re-sign every checkpoint and
    the seal with KEY, write it in place and set the mtime back."""
    import os

    from ledger import format as fmt
    from ledger.reader import decode_line
    from ledger.session import SessionBuilder

    st = path.stat()
    events = [decode_line(line) for line in path.read_bytes().splitlines()]
    opened = fmt.decode_opened(bytes(events[0].data))
    b = SessionBuilder(path.parent.name, opened.session, [KEY], opened.prev)
    out = [b.opened_line(events[0].ts)]
    for e in events[1:]:
        data = bytes(e.data)
        if e.kind == fmt.KIND_CHECKPOINT:
            out.append(b.checkpoint_line(e.ts, fmt.decode_checkpoint(e.kind, data).dropped))
        elif e.kind == fmt.KIND_SEALED:
            seal = fmt.decode_checkpoint(e.kind, data)
            out.append(b.seal_line(e.ts, seal.reason, seal.dropped))
        else:
            out.append(b.line(e.kind, data.replace(old, new), e.ts))
    forged = b"".join(out)
    assert forged != path.read_bytes() and len(forged) == st.st_size
    path.write_bytes(forged)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _two_sessions(root):
    """Session 1 holds capture c1 (sealed, sha256 0..01); session 2 holds c2."""
    with Ledger.open(root, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("c1"))
        record(led, _sealed("c1", 1))
    with Ledger.open(root, namespace="n1", hmac_key=KEY) as led:
        record(led, _started("c2"))
    return session_paths(root / "n1")[0]


FORGED = "ee" * 32


def test_rewritten_folded_session_warns_and_views_follow_the_files(tmp_path):
    from ledger.verify import Policy, verify_path

    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
        assert p.capture("c1").sha256 == f"{1:064x}"
    _forge(first, f"{1:064x}".encode(), FORGED.encode())
    # The forgery is good on its own: same size and mtime, every signature verifies.
    assert verify_path([first], Policy(keys=(KEY,))).ok
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert r.rebuilt and len(r.changed) == 1 and first.stem in r.changed[0]
        # The view shows what the files on disk say (what `verify` can judge), not the
        # LMDB copy of bytes that no longer exist; the warning is what must not be lost.
        assert p.capture("c1").sha256 == FORGED
        # Recorded until an explicit rebuild, so a caller that ignored the result
        # (gc, archive) does not swallow it; no second rebuild.
        again = p.catch_up()
        assert not again.rebuilt and again.changed == r.changed
        assert p.rebuild().changed == r.changed
        assert p.catch_up().changed == []


def test_explicit_rebuild_reports_a_rewritten_folded_session(tmp_path):
    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
    _forge(first, f"{1:064x}".encode(), FORGED.encode())
    with Projector(tmp_path, "n1") as p:
        r = p.rebuild()
        assert len(r.changed) == 1 and first.stem in r.changed[0]


def test_rewrite_found_by_a_rebuild_cut_short_is_not_lost(tmp_path, monkeypatch):
    """The rebuild commits every COMMIT_EVERY events; one that dies after folding the
    rewritten session must leave the record of the rewrite, not views without it."""
    import ledger.projections as proj

    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
    _forge(first, f"{1:064x}".encode(), FORGED.encode())
    real = proj.ev.decode

    def dies_at_c2(kind, data):
        if b'"c2"' in bytes(data):
            raise RuntimeError("killed")
        return real(kind, data)

    monkeypatch.setattr(proj, "COMMIT_EVERY", 1)
    monkeypatch.setattr(proj.ev, "decode", dies_at_c2)
    with Projector(tmp_path, "n1") as p, pytest.raises(RuntimeError):
        p.catch_up()
    monkeypatch.setattr(proj.ev, "decode", real)
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert len(r.changed) == 1 and first.stem in r.changed[0]
        assert {c.capture_id for c in p.captures()} == {"c1", "c2"}


def test_unchanged_namespace_no_warning_no_rebuild_no_hashing(tmp_path, monkeypatch):
    import os

    import ledger.projections as proj

    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
    hashed = []
    real = proj.summarize
    monkeypatch.setattr(proj, "summarize", lambda path, ident: hashed.append(path) or real(path, ident))
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert not r.rebuilt and r.changed == [] and r.applied == 0 and hashed == []
        os.utime(first)  # touched, not changed: hashed once, no warning, then cheap again
        r = p.catch_up()
        assert not r.rebuilt and r.changed == [] and hashed == [first]
        p.catch_up()
        assert hashed == [first]


def test_locally_deleted_archived_session_is_no_warning(tmp_path):
    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
        assert first.stem in p.folded()
    first.unlink()  # archived, then deleted locally
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert not r.rebuilt and r.changed == []
        assert p.rebuild(allow_loss=True).changed == []  # no store here: the operator accepts the hot tier alone


def test_cut_folded_session_is_a_change(tmp_path):
    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
    first.write_bytes(first.read_bytes().rsplit(b"\n", 2)[0] + b"\n")  # seal line gone
    with Projector(tmp_path, "n1") as p:
        r = p.catch_up()
        assert r.rebuilt and len(r.changed) == 1 and "no longer ends in it" in r.changed[0]


def test_summary_kept_matches_what_the_next_session_names(tmp_path):
    """The summary folded for a session is the format's own `prev` of the next one,
    including across a catch-up that stopped in the middle of the session."""
    from ledger import format as fmt
    from ledger.reader import decode_line

    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY) as led:
        for i in range(37):
            record(led, _started(f"c{i}"))
            if i == 20:
                led.flush()
                with Projector(tmp_path, "n1") as p:
                    p.catch_up()
                    assert not p.position().sealed
    with Ledger.open(tmp_path, namespace="n1", hmac_key=KEY):
        pass
    first, second = session_paths(tmp_path / "n1")
    prev = fmt.decode_opened(bytes(decode_line(second.read_bytes().split(b"\n")[0]).data)).prev
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
        f = p.folded()[first.stem]
    assert (f.size, f.root, f.chain) == (prev.size, prev.root, prev.chain)


def test_cli_captures_warns_once_per_rewritten_session(tmp_path):
    import json
    import os
    import subprocess
    import sys

    first = _two_sessions(tmp_path)

    def captures():
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        args = [sys.executable, "-m", "ledger.cli", "captures", "--json", "--root", str(tmp_path), "--namespace", "n1"]
        return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)

    ok = captures()
    assert ok.returncode == 0 and ok.stderr == ""
    _forge(first, f"{1:064x}".encode(), FORGED.encode())
    r = captures()
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: warning: session ") and first.stem in lines[0]
    views = {c["capture_id"]: c for c in json.loads(r.stdout)}
    assert views["c1"]["sha256"] == FORGED


def test_rebuild_from_the_cold_store_compares_with_what_was_folded_locally(tmp_path):
    first = _two_sessions(tmp_path)
    with Projector(tmp_path, "n1") as p:
        p.catch_up()
    intact = first.read_bytes()
    _forge(first, f"{1:064x}".encode(), FORGED.encode())
    forged = first.read_bytes()
    first.unlink()  # archived and deleted; the cold copy is what comes back

    def cold(data):
        return lambda: iter([(first.stem, iter(data.split(b"\n")[:-1]))])

    with Projector(tmp_path, "n1", archived_sessions=cold(intact)) as p:
        before = p.dump()
        r = p.rebuild()
        assert r.changed == [] and p.dump() == before  # same bytes: nothing stored changes
    with Projector(tmp_path, "n1", archived_sessions=cold(forged)) as p:
        r = p.rebuild()
        assert len(r.changed) == 1 and first.stem in r.changed[0]
