"""Tests for ledger.writer (the embedded single writer) and ledger.handler.

What is checked, and how:

* Accounting: every submitted event is either a line in the file or counted in
  ``led.dropped`` by reason, and ``record()`` returns False exactly for the events
  it counts itself. Events are counted by reading the session files back.
* Everything the writer leaves on disk is checked with ``verify_path`` and the key
  (chain, seq, Merkle roots, signatures, the seal, ``prev`` links across sessions).
* Slow and broken disks go through the module-level ``_write`` / ``_fsync`` aliases;
  a real full disk (a 4 MiB tmpfs) is in tests/test_writer_recovery.py.
* Crash recovery kills a real child process with SIGKILL at random moments and checks
  that every event whose ``flush()`` returned before the kill is on disk. The long
  version of that loop is ``tools/crashloop.py``.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import os
import random
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import msgspec
import pytest

import ledger.writer as writer
from ledger import Ledger, LedgerHandler
from ledger import format as fmt
from ledger.errors import LockedError
from ledger.session import SessionBuilder
from ledger.verify import Policy, prev_link, verify_file, verify_path

REPO = Path(__file__).resolve().parents[1]
KEY = bytes(range(32))
NS = "edge-1"


# ---- helpers --------------------------------------------------------------------------


def _open(root: Path, namespace: str = NS, **options) -> Ledger:
    return Ledger.open(root, namespace=namespace, hmac_key=KEY, **options)


def _sessions(root: Path, namespace: str = NS) -> list[Path]:
    return sorted((root / namespace).glob("*.ndjson"))


def _lines(path: Path) -> list[dict]:
    """The complete lines of a session file, decoded (a torn tail is ignored)."""
    data = path.read_bytes()
    return [msgspec.json.decode(line) for line in data.split(b"\n")[:-1]]


def _all_lines(root: Path, namespace: str = NS) -> list[dict]:
    return [line for p in _sessions(root, namespace) for line in _lines(p)]


def _events(root: Path, kind: str, namespace: str = NS) -> list[dict]:
    """The data of every event of ``kind`` in the namespace, in file order."""
    return [line["data"] for line in _all_lines(root, namespace) if line["kind"] == kind]


def _assert_verifies(*paths: Path, allow_unsealed: bool = False) -> None:
    report = verify_path(list(paths), Policy(keys=(KEY,), allow_unsealed=allow_unsealed, jobs=1))
    bad = [(f.path, f.first_error) for f in report.files if not f.ok]
    assert report.ok, f"verification failed: {bad}"
    assert all(f.signatures == "verified" for f in report.files)


def _assert_gapless(path: Path) -> None:
    lines = _lines(path)
    assert [line["seq"] for line in lines] == list(range(len(lines)))


def _seal(path: Path) -> dict:
    """The last line of a session file, which must be its seal."""
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "nothing, not even a partial line, may follow the seal"
    last = msgspec.json.decode(raw.rstrip(b"\n").rsplit(b"\n", 1)[-1])
    assert last["kind"] == "session.sealed"
    return last


def _wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def _write_unsealed_session(root: Path, events: int, namespace: str = NS) -> Path:
    """A session file exactly as a writer that crashed after ``events`` events leaves it."""
    d = root / namespace
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    session = fmt.new_session_id(time.time() - 60)
    b = SessionBuilder(namespace, session, [KEY])
    ts = fmt.format_ts()
    out = [b.opened_line(ts)]
    out += [b.line("app.event", msgspec.json.encode({"i": i}), ts) for i in range(events)]
    path = d / f"{session}.ndjson"
    path.write_bytes(b"".join(out))
    path.chmod(0o600)
    return path


# ---- many producers ---------------------------------------------------------------------


def test_eight_threads_accounting_and_verification(tmp_path):
    root = tmp_path / "root"
    led = _open(root)
    threads, per_thread = 8, 10_000
    false_returns = [0] * threads
    start = threading.Barrier(threads)

    def produce(t: int) -> None:
        start.wait()
        n = 0
        for i in range(per_thread):
            if not led.record("load.event", {"t": t, "i": i}):
                n += 1
        false_returns[t] = n

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert led.flush(timeout=30)
    led.close(timeout=30)

    submitted = threads * per_thread
    events = _events(root, "load.event")
    dropped = dict(led.dropped)
    assert len(events) + sum(dropped.values()) == submitted
    assert sum(false_returns) == sum(dropped.values()) == dropped["queue_full"]
    # each producer's events land in the order it recorded them, each at most once
    for t in range(threads):
        mine = [e["i"] for e in events if e["t"] == t]
        assert mine == sorted(set(mine))
    for path in _sessions(root):
        _assert_gapless(path)
    _assert_verifies(root)
    seal = _seal(_sessions(root)[-1])
    assert seal["data"]["reason"] == "closed"
    assert seal["data"]["dropped"] == {k: v for k, v in dropped.items() if v}


# ---- a slow disk --------------------------------------------------------------------------


def test_slow_fsync_never_blocks_record_and_drops_are_sealed(tmp_path, monkeypatch):
    root = tmp_path / "root"
    led = _open(root, queue_size=64)
    real_fsync = writer._fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.05)
        real_fsync(fd)

    monkeypatch.setattr(writer, "_fsync", slow_fsync)
    latencies, false_returns, submitted = [], 0, 2000
    for i in range(submitted):
        t = time.perf_counter()
        ok = led.record("slow.event", {"i": i})
        latencies.append(time.perf_counter() - t)
        false_returns += not ok
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    assert p99 < 0.005, f"record() p99 {p99 * 1000:.2f} ms with a 50 ms fsync"
    assert led.dropped["queue_full"] > 0
    assert false_returns == led.dropped["queue_full"] == sum(led.dropped.values())
    led.close(timeout=30)

    path = _sessions(root)[-1]
    seal = _seal(path)
    assert seal["data"]["dropped"] == {"queue_full": led.dropped["queue_full"]}
    assert len(_events(root, "slow.event")) + led.dropped["queue_full"] == submitted
    _assert_verifies(root)


# ---- close ----------------------------------------------------------------------------------


def test_record_after_close_is_false_and_counted(tmp_path):
    led = _open(tmp_path / "root")
    assert led.record("app.event", {"i": 1})
    led.close()
    assert led.record("app.event", {"i": 2}) is False
    assert led.dropped["closed"] == 1
    led.close()  # idempotent
    assert [e["i"] for e in _events(tmp_path / "root", "app.event")] == [1]


def test_record_racing_close(tmp_path):
    """Producers racing close(): True and in the file before the seal, or counted."""
    root = tmp_path / "root"
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # more interleavings
    try:
        for round_ in range(4):
            ns = f"race-{round_}"
            led = _open(root, namespace=ns)
            results: dict[tuple[int, int], bool] = {}
            start = threading.Barrier(5)

            def produce(t: int, led=led, results=results, start=start) -> None:
                start.wait()
                for i in range(2000):
                    results[(t, i)] = led.record("race.event", {"t": t, "i": i})

            workers = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
            for w in workers:
                w.start()
            start.wait()
            time.sleep(random.uniform(0.0, 0.01))
            led.close(timeout=30)
            for w in workers:
                w.join()

            path = _sessions(root, ns)[-1]
            lines = _lines(path)
            assert lines[-1]["kind"] == "session.sealed"  # nothing after the seal
            written = [(e["data"]["t"], e["data"]["i"]) for e in lines if e["kind"] == "race.event"]
            assert len(written) == len(set(written))
            assert all(results[k] for k in written), "an event whose record() returned False is in the file"
            falses = sum(not v for v in results.values())
            true_not_written = sum(1 for k, v in results.items() if v) - len(written)
            dropped = sum(led.dropped.values())
            assert dropped == led.dropped["closed"]
            # every True either landed or was counted as a straggler behind close()
            assert dropped == falses + true_not_written
            assert _seal(path)["data"]["reason"] == "closed"
            _assert_verifies(root / ns)
    finally:
        sys.setswitchinterval(old_interval)


def test_record_preempted_across_close_is_not_lost(tmp_path):
    root = tmp_path / "root"
    led = _open(root)
    entered, release = threading.Event(), threading.Event()
    real_qsize = led._qsize

    def qsize_pausing_the_late_producer() -> int:
        # record() calls this after its `_closed` check and before putting the event:
        # pause there, as a thread switch would, while close() runs to the end.
        if threading.current_thread().name == "late-producer":
            entered.set()
            release.wait(10)
        return real_qsize()

    led._qsize = qsize_pausing_the_late_producer
    result = {}
    t = threading.Thread(
        target=lambda: result.update(ok=led.record("race.late", {"x": 1})), name="late-producer", daemon=True
    )
    t.start()
    assert entered.wait(10)
    led.close(timeout=10)
    assert not led._thread.is_alive()
    release.set()
    t.join(10)

    written = len(_events(root, "race.late"))
    counted = sum(led.dropped.values())
    # exactly one of: returned False (counted), or landed in the file, or counted as straggler
    assert written + counted == 1, f"record() returned {result['ok']}, written {written}, dropped {led.dropped}"


# ---- record() arguments ---------------------------------------------------------------------


class Login(msgspec.Struct):
    cn: str
    ip: str
    port: int = 443


class Pair(msgspec.Struct, array_like=True):
    a: int
    b: int


def test_record_type_and_kind_errors_raise_in_the_caller(tmp_path):
    with _open(tmp_path / "root") as led:
        with pytest.raises(TypeError):
            led.record(123, {"a": 1})
        with pytest.raises(TypeError):
            led.record(b"app.event", {"a": 1})
        with pytest.raises(TypeError):
            led.record("app.event", [1, 2])
        with pytest.raises(TypeError):
            led.record("app.event", {1, 2})
        with pytest.raises(TypeError):
            led.record("app.event", "text")
        for kind in ("session.sealed", "session.opened", "ledger.checkpoint", "", "has space", "-lead"):
            with pytest.raises(ValueError):
                led.record(kind, {"a": 1})
        assert sum(led.dropped.values()) == 0


def test_invalid_and_too_large_events_are_counted_and_the_writer_goes_on(tmp_path):
    root = tmp_path / "root"
    led = _open(root, max_event_bytes=1024)
    assert led.record("app.event", {"x": object()})  # msgspec cannot encode it
    assert led.record("app.event", {(1, 2): "tuple key"})
    assert led.record("app.event", Pair(1, 2))  # encodes to an array, not an object
    assert led.record("app.event", {"s": "x" * 2000})  # over max_event_bytes
    assert led.record("app.event", {"ok": True})
    assert led.flush(timeout=10)
    assert led.dropped["invalid"] == 3
    assert led.dropped["too_large"] == 1
    assert led.stats()["failed"] is None
    assert led.record("app.event", {"ok": 2})
    led.close(timeout=10)
    assert _events(root, "app.event") == [{"ok": True}, {"ok": 2}]
    assert _seal(_sessions(root)[-1])["data"]["dropped"] == {"invalid": 3, "too_large": 1}
    _assert_verifies(root)


def _nested(depth: int) -> dict:
    """A dict whose JSON nests ``depth`` levels (itself level 1)."""
    inner: object = 0
    for _ in range(depth - 1):
        inner = [inner]
    return {"n": inner}


def test_data_nested_past_the_verifier_limit_is_dropped_not_written(tmp_path):
    """SPEC 2.1: data nests at most 128 levels; the writer never writes a line that cannot verify,
    and nesting past the interpreter's recursion limit drops the event instead of the writer."""
    root = tmp_path / "root"
    led = _open(root)
    assert led.record("app.event", _nested(fmt.MAX_DATA_DEPTH))
    assert led.record("app.event", _nested(fmt.MAX_DATA_DEPTH + 1))
    assert led.record("app.event", _nested(5000))  # msgspec raises RecursionError encoding it
    assert led.record("app.event", {"ok": True})
    led.close(timeout=10)
    assert led.dropped["invalid"] == 2
    assert led.stats()["failed"] is None
    assert [e for e in _events(root, "app.event") if "ok" in e] == [{"ok": True}]
    assert len(_events(root, "app.event")) == 2
    _assert_verifies(root)


def test_struct_data(tmp_path):
    root = tmp_path / "root"
    with _open(root) as led:
        assert led.record("auth.login", Login(cn="alice", ip="10.1.2.3"))
    assert _events(root, "auth.login") == [{"cn": "alice", "ip": "10.1.2.3", "port": 443}]
    _assert_verifies(root)


# ---- flush and durability -------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["always", "batch", "none"])
def test_flush_puts_events_in_the_file(tmp_path, durability):
    root = tmp_path / "root"
    led = _open(root, durability=durability)
    for round_ in range(3):
        for i in range(100):
            assert led.record("app.event", {"round": round_, "i": i})
        assert led.flush(timeout=10) is True
        # read the live file: everything recorded before flush() is there
        events = [line["data"] for line in _lines(led.path) if line["kind"] == "app.event"]
        assert len(events) == 100 * (round_ + 1)
        assert events[-1] == {"round": round_, "i": 99}
    led.close(timeout=10)
    assert led.flush() is True  # after close: everything is written
    _assert_gapless(_sessions(root)[-1])
    _assert_verifies(root)


# ---- checkpoints --------------------------------------------------------------------------


def _checkpoints(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["kind"] == "ledger.checkpoint"]


def test_checkpoint_every(tmp_path):
    root = tmp_path / "root"
    with _open(root, checkpoint_every=10) as led:
        for i in range(95):
            led.record("app.event", {"i": i})
    lines = _lines(_sessions(root)[-1])
    cps = _checkpoints(lines)
    # a checkpoint every 10 lines (the opened line and checkpoints are events of the file too)
    assert [c["seq"] for c in cps] == list(range(10, lines[-1]["seq"], 10))
    assert all(c["data"]["size"] == c["seq"] for c in cps)
    between = [lines[a["seq"] + 1 : b["seq"]] for a, b in zip(cps, cps[1:], strict=False)]
    assert all(len(seg) == 9 and all(x["kind"] == "app.event" for x in seg) for seg in between)
    _assert_verifies(root)


def test_checkpoint_after_idle_interval(tmp_path):
    root = tmp_path / "root"
    led = _open(root, checkpoint_interval_s=0.2)
    led.record("app.event", {"i": 1})
    assert led.flush(timeout=10)
    assert _wait_until(lambda: _checkpoints(_lines(led.path)), timeout=5)
    lines = _lines(led.path)
    cp = _checkpoints(lines)[0]
    assert cp["seq"] == 2 and cp["data"]["size"] == 2
    # no unsigned events: no further checkpoint while idle
    time.sleep(0.5)
    assert len(_checkpoints(_lines(led.path))) == 1
    report = verify_file(led.path, Policy(keys=(KEY,), allow_unsealed=True, jobs=1))
    assert report.ok and report.signed_size == 2
    led.close()
    _assert_verifies(root)


def test_explicit_checkpoint(tmp_path):
    root = tmp_path / "root"
    led = _open(root)
    for i in range(3):
        led.record("app.event", {"i": i})
    assert led.checkpoint(timeout=10) is True
    lines = _lines(led.path)
    assert lines[-1]["kind"] == "ledger.checkpoint"
    assert lines[-1]["seq"] == lines[-1]["data"]["size"] == 4
    report = verify_file(led.path, Policy(keys=(KEY,), allow_unsealed=True, jobs=1))
    assert report.ok and report.signed_size == 4 and report.checkpoints == 1
    led.close()
    _assert_verifies(root)


# ---- rotation -------------------------------------------------------------------------------


def _assert_prev_chain(root: Path, namespace: str = NS) -> list[Path]:
    paths = _sessions(root, namespace)
    reports = [verify_file(p, Policy(keys=(KEY,), jobs=1)) for p in paths]
    assert all(r.ok for r in reports)
    assert _lines(paths[0])[0]["data"]["prev"] is None
    for before, after in zip(reports, paths[1:], strict=False):
        assert _lines(after)[0]["data"]["prev"] == msgspec.structs.asdict(prev_link(before))
    return paths


def test_rotate_bytes(tmp_path):
    root = tmp_path / "root"
    with _open(root, rotate_bytes=8192) as led:
        for round_ in range(40):
            for i in range(10):
                assert led.record("app.event", {"round": round_, "i": i, "pad": "p" * 40})
            assert led.flush(timeout=10)
    paths = _assert_prev_chain(root)
    assert len(paths) >= 4
    assert [_seal(p)["data"]["reason"] for p in paths] == ["rotated"] * (len(paths) - 1) + ["closed"]
    for p in paths:
        _assert_gapless(p)
    events = _events(root, "app.event")
    assert [(e["round"], e["i"]) for e in events] == [(r, i) for r in range(40) for i in range(10)]
    _assert_verifies(root)


def test_rotate_interval(tmp_path):
    root = tmp_path / "root"
    with _open(root, rotate_interval_s=0.3) as led:
        led.record("app.event", {"i": 1})
        assert led.flush(timeout=10)
        # the writer rotates while idle
        assert _wait_until(lambda: len(_sessions(root)) >= 2, timeout=5)
        led.record("app.event", {"i": 2})
    paths = _assert_prev_chain(root)
    assert _seal(paths[0])["data"]["reason"] == "rotated"
    assert _seal(paths[-1])["data"]["reason"] == "closed"
    assert [e["i"] for e in _events(root, "app.event")] == [1, 2]
    _assert_verifies(root)


# ---- one writer per namespace ---------------------------------------------------------------

_OPEN_SNIPPET = textwrap.dedent(
    """
    import sys
    from ledger import Ledger
    Ledger.open(sys.argv[1], namespace=sys.argv[2], hmac_key=bytes.fromhex(sys.argv[3])).close()
    print("opened")
    """
)


def _open_in_child(root: Path, namespace: str = NS) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _OPEN_SNIPPET, str(root), namespace, KEY.hex()],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_writer_per_namespace(tmp_path):
    root = tmp_path / "root"
    led = _open(root)
    with pytest.raises(LockedError, match=rf"pid {os.getpid()}\b"):
        _open(root)
    # another namespace in the same root is independent
    _open(root, namespace="edge-2").close()
    child = _open_in_child(root)
    assert child.returncode != 0
    assert "LockedError" in child.stderr and f"pid {os.getpid()} " in child.stderr, child.stderr
    assert led.record("app.event", {"still": "writing"})  # the failed opens did not disturb it
    led.close()
    child = _open_in_child(root)
    assert child.returncode == 0 and "opened" in child.stdout, child.stderr
    _open(root).close()
    assert _events(root, "app.event") == [{"still": "writing"}]
    _assert_verifies(root)


# ---- crash recovery ------------------------------------------------------------------------


def _crashloop_module():
    """tools/crashloop.py: the long kill loop, whose child script this test runs too."""
    spec = importlib.util.spec_from_file_location("crashloop", REPO / "tools" / "crashloop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["crashloop"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


CRASHLOOP = _crashloop_module()
CRASH_CHILD = CRASHLOOP.CHILD


def _run_and_kill(child: Path, root: Path, it: int, delay: float, rotate_bytes: int, log: Path):
    """Start the writer child, SIGKILL it ``delay`` s after it is ready; return (confirmed, drops).

    tools/crashloop.py's own starter: it raises (crashloop.Failure) if the child never
    became ready or printed anything unexpected.
    """
    confirmed, drops, killed = CRASHLOOP.run_child(child, root, NS, it, delay, rotate_bytes, log)
    assert killed, "the child ended before it was killed"
    return confirmed, drops


def test_crash_recovery_kill_loop(tmp_path):
    """SIGKILL a writer at random moments; every flushed event survives, everything verifies."""
    child = tmp_path / "crash_child.py"
    child.write_text(CRASH_CHILD)
    root = tmp_path / "root"
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    seen: set[str] = set()
    recovered_seals = 0
    for it in range(20):
        ctx = f"seed {seed} iteration {it}"
        confirmed, drops = _run_and_kill(
            child, root, it, rng.uniform(0.05, 0.4), rng.choice([64 * 1024, 512 * 1024]), tmp_path / "child.log"
        )
        led = _open(root)
        action = led.recovered.action
        led.close(timeout=30)

        new = [p for p in _sessions(root) if p.name not in seen]
        seen.update(p.name for p in new)
        _assert_verifies(*new)
        child_sessions, parent_session = new[:-1], new[-1]
        assert child_sessions, ctx
        reasons = [_seal(p)["data"]["reason"] for p in child_sessions]
        assert reasons[:-1] == ["rotated"] * (len(reasons) - 1), ctx
        if action == "sealed":
            assert reasons[-1] == "recovered", ctx
            assert led.recovered.torn_bytes == _seal(child_sessions[-1])["data"]["torn_bytes"]
            recovered_seals += 1
        elif action == "quarantined":
            assert reasons[-1] == "rotated", ctx
            # only a session killed while writing its first line may be set aside
            assert led.recovered.opened_extra["quarantine_reason"].startswith("empty"), (ctx, led.recovered)
            quarantined = root / NS / led.recovered.opened_extra["quarantined"]
            assert b"\n" not in quarantined.read_bytes(), ctx
        else:  # killed between a rotation's seal and the next session
            assert action == "none" and reasons[-1] == "rotated", (ctx, action)
        opened = _lines(parent_session)[0]["data"]
        assert opened["prev"] == msgspec.structs.asdict(prev_link(verify_file(child_sessions[-1])))

        found = sorted(
            line["data"]["n"]
            for p in child_sessions
            for line in _lines(p)
            if line["kind"] == "crash.event" and line["data"]["it"] == it
        )
        assert len(found) == len(set(found)), ctx
        # the writer keeps order: what is on disk is a prefix of what was recorded
        assert found == [n for n in range(1, len(found) + len(drops) + 1) if n not in drops][: len(found)], ctx
        missing = [n for n in range(1, confirmed + 1) if n not in drops and n not in set(found)]
        assert not missing, f"{ctx}: flushed events lost: {missing[:10]}... (confirmed {confirmed})"
    assert recovered_seals >= 5, f"seed {seed}: only {recovered_seals} kills landed in a live session"
    _assert_verifies(root)  # every session, every prev link across the 20 crashes


def test_torn_tail_is_cut_and_counted(tmp_path):
    root = tmp_path / "root"
    path = _write_unsealed_session(root, events=5)
    whole = path.read_bytes()
    half = b'{"v":1,"seq":6,"ts":"2026-11-23T20:00:00.000000Z","kind":"app.event","da'
    with open(path, "ab") as f:
        f.write(half)
    led = _open(root)
    assert led.recovered.action == "sealed"
    assert led.recovered.torn_bytes == len(half)
    led.close()
    raw = path.read_bytes()
    assert raw.startswith(whole) and half not in raw
    seal = _seal(path)
    assert seal["seq"] == 6
    assert seal["data"]["reason"] == "recovered"
    assert seal["data"]["torn_bytes"] == len(half)
    new = _sessions(root)[-1]
    assert _lines(new)[0]["data"]["prev"] == msgspec.structs.asdict(prev_link(verify_file(path)))
    _assert_verifies(root)


def test_unsealed_session_without_torn_tail_is_sealed(tmp_path):
    root = tmp_path / "root"
    path = _write_unsealed_session(root, events=3)
    led = _open(root)
    assert led.recovered.action == "sealed" and led.recovered.torn_bytes == 0
    led.close()
    assert _seal(path)["data"]["reason"] == "recovered"
    _assert_verifies(root)


def test_corrupt_session_is_quarantined_byte_for_byte(tmp_path, caplog):
    root = tmp_path / "root"
    path = _write_unsealed_session(root, events=6)
    raw = bytearray(path.read_bytes())
    lines = raw.split(b"\n")
    # flip a byte in the middle of line 4 (seq 3): {"i":2} becomes {"i":3}
    offset = sum(len(x) + 1 for x in lines[:3]) + lines[3].index(b'{"i":2}') + 5
    assert raw[offset : offset + 1] == b"2"
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))
    before = path.read_bytes()

    with caplog.at_level(logging.ERROR, logger="ledger.writer"):
        led = _open(root)
    assert led.recovered.action == "quarantined"
    assert led.record("app.after", {"ok": True})
    led.close()

    aside = path.with_name(path.name + ".quarantined")
    assert not path.exists()
    assert aside.read_bytes() == before
    opened = _lines(_sessions(root)[-1])[0]["data"]
    assert opened["quarantined"] == aside.name
    assert "line 4" in opened["quarantine_reason"] and "chain_mismatch" in opened["quarantine_reason"]
    assert opened["prev"] is None
    assert any(r.levelno == logging.ERROR and aside.name in r.getMessage() for r in caplog.records)
    assert _events(root, "app.after") == [{"ok": True}]
    _assert_verifies(root)


def test_prev_link_survives_deleting_the_sealed_file(tmp_path):
    root = tmp_path / "root"
    with _open(root) as led:
        led.record("app.event", {"i": 1})
    first = _sessions(root)[0]
    summary = msgspec.structs.asdict(prev_link(verify_file(first, Policy(keys=(KEY,)))))
    record = json.loads((root / NS / ".last-seal.json").read_text())
    assert {k: record[k] for k in summary} == summary and set(record) == {*summary, "key", "mac"}
    first.unlink()  # archived away
    with _open(root) as led:
        assert led.recovered.action == "none"
        led.record("app.event", {"i": 2})
    [second] = _sessions(root)
    assert _lines(second)[0]["data"]["prev"] == summary
    _assert_verifies(root)  # the first session present names a prev that is not here: not checked


# ---- disk errors --------------------------------------------------------------------------


def _error_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "ledger.writer" and r.levelno >= logging.ERROR]


def test_enospc_then_room_again_the_writer_recovers_and_tells(tmp_path, monkeypatch, caplog):
    """Issue 12 item 4: after ENOSPC the writer counts drops (disk_full), probes with
    backoff, and once writes succeed again accepts events; the session it had is sealed
    from its verified bytes (reason disk_full) with every drop, by reason."""
    caplog.set_level(logging.WARNING, logger="ledger.writer")
    monkeypatch.setattr(writer, "PROBE_MAX_S", 0.2)
    root = tmp_path / "root"
    led = _open(root)
    real_write = writer._write
    disk = {"calls": 0, "full_after": None}

    def write_until_full(fd, data):
        disk["calls"] += 1
        if disk["full_after"] is not None and disk["calls"] > disk["full_after"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(writer, "_write", write_until_full)
    submitted = 0
    for round_ in range(3):  # these land
        for i in range(10):
            submitted += 1
            assert led.record("disk.event", {"round": round_, "i": i})
        assert led.flush(timeout=10)
    first = led.path
    disk["full_after"] = disk["calls"]  # every write from here on fails
    for i in range(10):
        submitted += 1
        assert led.record("disk.event", {"round": 3, "i": i})
    assert _wait_until(lambda: led.stats()["disk_full"], timeout=10)
    assert led._thread.is_alive() and led.stats()["failed"] is None
    assert led.dropped["disk_full"] == 10  # the batch that could not be written
    false_returns = 0
    for i in range(20):  # the host goes on; its events are counted
        submitted += 1
        false_returns += led.record("disk.event", {"round": 4, "i": i}) is False
    t = time.monotonic()
    assert led.flush(timeout=10) is False
    assert time.monotonic() - t < 1.0, "flush must return promptly while the disk is full"
    assert false_returns == 20
    time.sleep(0.5)  # several probes fail
    assert led.stats()["disk_full"]

    disk["full_after"] = None  # room again
    assert _wait_until(lambda: not led.stats()["disk_full"], timeout=10)
    accepted = 0
    for i in range(100):
        submitted += 1
        accepted += led.record("disk.event", {"round": 5, "i": i})
    assert accepted == 100
    assert led.flush(timeout=10) is True
    led.close(timeout=10)

    errors = _error_records(caplog)
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage(), [r.getMessage() for r in errors]
    written = _events(root, "disk.event")
    assert len(written) == 130
    assert led.dropped["disk_full"] == 30 == sum(led.dropped.values())
    assert len(written) + sum(led.dropped.values()) == submitted
    paths = _sessions(root)
    assert paths[0] == first and len(paths) == 2
    seal = _seal(first)["data"]
    assert seal["reason"] == "disk_full" and seal["dropped"] == {"disk_full": 30}
    assert _seal(paths[1])["data"]["dropped"] == {"disk_full": 30}
    _assert_verifies(root)


def test_record_after_writer_failure_counts_writer_failed(tmp_path, monkeypatch):
    led = _open(tmp_path / "root")

    def broken(fd, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer, "_write", broken)
    led.record("disk.event", {"i": 0})
    assert _wait_until(lambda: not led._thread.is_alive(), timeout=10)
    before = dict(led.dropped)
    assert led.record("disk.event", {"i": 1}) is False
    led.close()
    assert led.dropped["writer_failed"] == before["writer_failed"] + 1, led.dropped


def test_flush_returns_promptly_when_its_batch_fails(tmp_path, monkeypatch):
    led = _open(tmp_path / "root")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write", full)
    led.record("disk.event", {"i": 0})
    t = time.monotonic()
    ok = led.flush(timeout=3)
    took = time.monotonic() - t
    led.close(timeout=5)
    assert ok is False
    assert took < 1.0, f"flush() took {took:.2f} s to report the failed write"


def test_short_write_then_enospc_counts_each_event_once(tmp_path, monkeypatch):
    root = tmp_path / "root"
    led = _open(root, durability="batch")
    parked, gate = threading.Event(), threading.Event()
    real_fsync, real_write = writer._fsync, writer._write

    def gated_fsync(fd: int) -> None:
        parked.set()
        gate.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(writer, "_fsync", gated_fsync)
    assert led.record("disk.event", {"i": 0})
    assert parked.wait(10)  # the writer wrote event 0 and waits in fsync
    for i in range(1, 11):  # these ten make the next batch
        assert led.record("disk.event", {"i": i})
    calls = {"n": 0}

    def short_then_full(fd, data):
        # what write(2) does on a nearly full disk: a short write, then ENOSPC
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) - 10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer, "_write", short_then_full)
    gate.set()
    assert _wait_until(lambda: led.stats()["disk_full"], timeout=10)
    led.close(timeout=10)  # the disk is still full: the session stays unsealed
    assert not led._thread.is_alive()
    dropped = sum(led.dropped.values())
    monkeypatch.undo()
    with _open(root) as led2:  # recovery seals, with the drops the first writer counted
        assert led2.recovered.action == "sealed"
    _assert_verifies(root)
    written = len(_events(root, "disk.event"))
    assert written + dropped == 11, f"written {written} + dropped {dropped} != 11 submitted"
    assert _seal(_sessions(root)[0])["data"]["dropped"] == {"disk_full": dropped}


# ---- permissions -------------------------------------------------------------------------


def test_files_0600_and_directories_0700(tmp_path):
    root = tmp_path / "root"
    old = os.umask(0)
    try:
        with _open(root, rotate_bytes=4096) as led:
            for i in range(200):
                led.record("app.event", {"i": i, "pad": "p" * 50})
                if i % 20 == 0:
                    led.flush()
    finally:
        os.umask(old)
    assert len(_sessions(root)) >= 2
    for d in (root, root / NS):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    files = list((root / NS).rglob("*"))
    assert {".lock", ".last-seal.json", ".seals"} <= {f.name for f in files}
    for f in files:
        want = 0o700 if f.is_dir() else 0o600
        assert stat.S_IMODE(f.stat().st_mode) == want, f


# ---- logging handler ---------------------------------------------------------------------


def test_ledger_handler(tmp_path):
    root = tmp_path / "root"
    logger = logging.getLogger("audit-test")
    logger.setLevel(logging.INFO)
    with _open(root) as led:
        handler = LedgerHandler(led)
        logger.addHandler(handler)
        try:
            logger.info("login", extra={"audit": {"cn": "alice"}})
            logger.warning("denied %s", "bob", extra={"audit": {"cn": "bob", "message": "not overridden"}})
        finally:
            logger.removeHandler(handler)
    [info] = _events(root, "log.info")
    assert info["message"] == "login" and info["cn"] == "alice"
    assert info["logger"] == "audit-test" and info["level"] == "INFO"
    [warning] = _events(root, "log.warning")
    assert warning["message"] == "denied bob" and warning["cn"] == "bob"
    _assert_verifies(root)
