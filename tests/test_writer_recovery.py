"""The writer recovers and tells (issue 12 item 4, issue 11 "local state is never trusted alone").

* A real full disk: a 4 MiB tmpfs (``mount -t tmpfs -o size=4m``; skipped, saying why,
  when it cannot be mounted), filled with a filler file, then freed.
* Crashes: a real child process killed with SIGKILL, started and killed with
  tools/crashloop.py's ``run_child``; the two crash points of the double crash are
  reached by the child killing itself at exactly those points.
* Every verdict is checked with ``verify_path`` and the key, ``prev`` links included.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

import ledger.writer as writer
from ledger import Ledger
from ledger.errors import LedgerError
from ledger.verify import Policy, prev_link, verify_file, verify_path

REPO = Path(__file__).resolve().parents[1]
KEY = bytes(range(32))
NS = "edge-1"

_spec = importlib.util.spec_from_file_location("crashloop", REPO / "tools" / "crashloop.py")
CRASHLOOP = sys.modules.get("crashloop") or importlib.util.module_from_spec(_spec)
if "crashloop" not in sys.modules:
    sys.modules["crashloop"] = CRASHLOOP  # its dataclasses look themselves up there
    _spec.loader.exec_module(CRASHLOOP)


# ---- helpers --------------------------------------------------------------------------


def _open(root: Path, **options) -> Ledger:
    return Ledger.open(root, namespace=NS, hmac_key=KEY, **options)


def _sessions(root: Path) -> list[Path]:
    return sorted((root / NS).glob("*.ndjson"))


def _lines(path: Path) -> list[dict]:
    return [msgspec.json.decode(x) for x in path.read_bytes().split(b"\n")[:-1]]


def _events(root: Path, kind: str) -> list[dict]:
    return [line["data"] for p in _sessions(root) for line in _lines(p) if line["kind"] == kind]


def _seal(path: Path) -> dict:
    last = _lines(path)[-1]
    assert last["kind"] == "session.sealed", path
    return last["data"]


def _assert_verifies(*paths: Path) -> None:
    report = verify_path(list(paths), Policy(keys=(KEY,), jobs=1))
    bad = [(f.path, f.first_error) for f in report.files if not f.ok]
    assert report.ok, f"verification failed: {bad}"


def _wait_until(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def _fill(path: Path) -> None:
    """Write ``path`` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * 4096
        while True:
            try:
                f.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MiB tmpfs (needs root and mount permission; skipped with the reason otherwise)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip() or proc.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# ---- a full disk, then room again -------------------------------------------------------


def test_full_tmpfs_then_room_again_events_accepted_and_drops_in_the_seal(small_tmpfs, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="ledger.writer")
    monkeypatch.setattr(writer, "PROBE_MAX_S", 0.2)
    root = small_tmpfs / "root"
    filler = small_tmpfs / "filler"
    led = _open(root)
    submitted = 0
    for _ in range(50):
        submitted += 1
        assert led.record("disk.event", {"i": submitted})
    assert led.flush(timeout=10)
    _fill(filler)
    deadline = time.monotonic() + 20
    while not led.stats()["disk_full"] and time.monotonic() < deadline:
        for _ in range(20):
            submitted += 1
            led.record("disk.event", {"i": submitted, "pad": "x" * 500})
        led.flush(timeout=5)
    assert led.stats()["disk_full"], led.stats()
    refused = 0
    for _ in range(100):
        submitted += 1
        refused += led.record("disk.event", {"i": submitted}) is False
    assert refused == 100
    assert led.flush(timeout=5) is False
    full_session = led.path
    assert led._thread.is_alive() and led.stats()["failed"] is None

    filler.unlink()  # room again
    assert _wait_until(lambda: not led.stats()["disk_full"], timeout=10), led.stats()
    accepted = 0
    for _ in range(100):
        submitted += 1
        accepted += led.record("disk.event", {"i": submitted})
    assert accepted == 100, "events are accepted again once the disk has room"
    assert led.flush(timeout=10) is True
    led.close(timeout=10)

    dropped = {k: v for k, v in led.dropped.items() if v}
    assert dropped.get("disk_full", 0) >= 100, dropped
    written = _events(root, "disk.event")
    assert len(written) + sum(dropped.values()) == submitted, "nothing lost silently, nothing counted twice"
    seal = _seal(full_session)
    assert seal["reason"] == "disk_full" and seal["dropped"] == dropped
    assert _seal(_sessions(root)[-1])["dropped"] == dropped
    _assert_verifies(root)


_DISK_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[6])
    from ledger import Ledger

    root, namespace, key_hex, it, rotate_bytes = sys.argv[1:6]
    led = Ledger.open(root, namespace=namespace, hmac_key=bytes.fromhex(key_hex))
    n = 0
    for _ in range(20):
        n += 1
        led.record("crash.event", {"it": 0, "n": n})
    led.flush(timeout=10)
    print(n, flush=True)
    # fill the disk, then go on recording: the writer counts what it cannot write
    with open(root + "/filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(4096))
        except OSError:
            pass
    print("ready", flush=True)
    while True:
        n += 1
        if not led.record("crash.event", {"it": 0, "n": n, "pad": "x" * 300}):
            print("drop", n, flush=True)
        time.sleep(0.001)
    """
)


def test_full_tmpfs_drops_reach_the_recovered_seal_across_sigkill(small_tmpfs, tmp_path):
    child = tmp_path / "disk_child.py"
    child.write_text(_DISK_CHILD)
    root = small_tmpfs / "root"
    confirmed, drops, killed = CRASHLOOP.run_child(child, root, NS, 0, 1.0, 0, tmp_path / "child.log")
    assert killed
    assert len(drops) > 0, "the child saw no drop: the disk did not fill"
    counted = json.loads((root / NS / ".drops").read_bytes())["dropped"]
    assert counted["disk_full"] >= len(drops)
    [crashed] = _sessions(root)
    (root / "filler").unlink()  # room again

    with _open(root) as led:
        assert led.recovered.action == "sealed"
        assert led.dropped["disk_full"] == 0  # they belong to the recovered seal, not to this writer
    seal = _seal(crashed)
    assert seal["reason"] == "recovered"
    assert seal["dropped"] == counted, "the recovered seal carries every drop the crashed writer counted"
    found = [e["n"] for e in _events(root, "crash.event")]
    assert found[:confirmed] == list(range(1, confirmed + 1))
    assert not set(found) & drops
    new = _sessions(root)[-1]
    assert _lines(new)[0]["data"]["prev"] == msgspec.structs.asdict(prev_link(verify_file(crashed)))
    _assert_verifies(root)


def test_drops_after_the_last_seal_are_carried_to_the_next_writer(tmp_path):
    """A writer that sealed, counted more drops and died before its next session (the
    state a full disk at rotation leaves): the next writer reports them."""
    root = tmp_path / "root"
    led = _open(root)
    led.record("app.event", {"i": 1})
    led.close()
    sealed = _sessions(root)[-1]
    # the drops file as the dead writer left it: more counted after that seal
    with open(root / NS / ".drops", "r+b") as f:
        f.write(writer._drops_record(NS, sealed.stem, {"disk_full": 7, "queue_full": 2}, KEY))
    with _open(root) as led2:
        assert led2.dropped["disk_full"] == 7 and led2.dropped["queue_full"] == 2
    assert _seal(_sessions(root)[-1])["dropped"] == {"disk_full": 7, "queue_full": 2}
    # a forged drops file (no key) is not believed
    with open(root / NS / ".drops", "r+b") as f:
        f.write(writer._drops_record(NS, _sessions(root)[-1].stem, {"disk_full": 99}, b"k" * 32))
    with _open(root) as led3:
        assert led3.dropped["disk_full"] == 0
    _assert_verifies(root)


def test_failed_open_on_a_full_disk_leaves_no_session(small_tmpfs):
    root = small_tmpfs / "root"
    with _open(root) as led:
        led.record("app.event", {"i": 1})
    before = sorted(p.name for p in (root / NS).iterdir())
    _fill(small_tmpfs / "filler")
    with pytest.raises(LedgerError, match="No space left on device") as info:
        _open(root)
    assert str(root / NS) in str(info.value) and ".ndjson" in str(info.value), "the error names the path"
    assert sorted(p.name for p in (root / NS).iterdir()) == before, "nothing is left behind"
    _assert_verifies(root / NS)
    (small_tmpfs / "filler").unlink()
    with _open(root) as led:
        assert led.recovered.action == "none"
    _assert_verifies(root / NS)


def test_first_open_on_a_full_disk_leaves_nothing_a_verifier_counts(small_tmpfs):
    root = small_tmpfs / "root"
    (root / NS).mkdir(parents=True, mode=0o700)
    _fill(small_tmpfs / "filler")
    with pytest.raises(LedgerError, match="No space left on device"):
        _open(root)
    assert not list((root / NS).glob("*.ndjson")) and not (root / NS / ".drops").exists()


# ---- rotate_bytes is a bound -------------------------------------------------------------


def test_rotate_bytes_bounds_every_session_under_a_burst(tmp_path):
    root = tmp_path / "root"
    n = 5000
    led = _open(root, rotate_bytes=4096, queue_size=n)
    for i in range(n):  # one burst: the writer takes it in batches of thousands
        assert led.record("burst.event", {"i": i, "pad": "p" * 40})
    led.close(timeout=60)
    assert sum(led.dropped.values()) == 0
    paths = _sessions(root)
    assert len(paths) > 50
    for p in paths:
        raw = p.read_bytes().split(b"\n")[:-1]
        seal, last_line = len(raw[-1]) + 1, len(raw[-2]) + 1
        assert p.stat().st_size <= 4096 + last_line + seal, (p.name, p.stat().st_size)
        assert p.stat().st_size - last_line - seal < 4096
    assert [e["i"] for e in _events(root, "burst.event")] == list(range(n))
    _assert_verifies(root)


# ---- the double crash ---------------------------------------------------------------------

_DOUBLE_CRASH_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[6])
    import ledger.writer as writer
    from ledger import Ledger

    root, namespace, key_hex, point, rotate_bytes = sys.argv[1:6]
    key = bytes.fromhex(key_hex)

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "0":
        # crash 1: after the seal line is durable, before .last-seal.json is updated
        real_atomic = writer._write_atomic_file

        def atomic(path, data):
            if path.name == ".last-seal.json":
                die()
            real_atomic(path, data)

        writer._write_atomic_file = atomic
        led = Ledger.open(root, namespace=namespace, hmac_key=key)
        for i in range(10):
            led.record("app.event", {"i": i})
        led.flush(timeout=10)
        print("ready", flush=True)
        led.close()
    else:
        # crash 2: during the next open, after line 0 is begun, before it is complete
        real_write = writer._write

        def write(fd, data):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".ndjson"):
                real_write(fd, bytes(data[:20]))
                die()
            return real_write(fd, data)

        writer._write = write
        print("ready", flush=True)
        Ledger.open(root, namespace=namespace, hmac_key=key)
    print("not killed", flush=True)
    """
)


def test_double_crash_links_to_the_newest_verified_seal(tmp_path):
    child = tmp_path / "double_crash.py"
    child.write_text(_DOUBLE_CRASH_CHILD)
    root = tmp_path / "root"
    with _open(root) as led:  # S1, sealed and recorded
        led.record("app.event", {"i": -1})
    stale = (root / NS / ".last-seal.json").read_bytes()
    for point in (0, 1):
        _, _, killed = CRASHLOOP.run_child(child, root, NS, point, 2.0, 0, tmp_path / "child.log")
        assert killed
        if point == 0:
            assert (root / NS / ".last-seal.json").read_bytes() == stale, "crash 1 left the record stale"
    s1, s2, s3 = _sessions(root)
    assert _seal(s2)["reason"] == "closed"
    assert b"\n" not in s3.read_bytes(), "crash 2 left a torn line 0"

    with _open(root) as led:
        assert led.recovered.action == "quarantined"
        newest = led.path
        record = json.loads((root / NS / ".last-seal.json").read_bytes())
        assert record["session"] == s2.stem, ".last-seal.json rewritten from the verified session"
    assert _lines(newest)[0]["data"]["prev"] == msgspec.structs.asdict(prev_link(verify_file(s2)))
    assert (root / NS / (s3.name + ".quarantined")).exists()
    _assert_verifies(root / NS)


def test_forged_last_seal_is_not_trusted_by_recovery(tmp_path):
    root = tmp_path / "root"
    with _open(root) as led:
        led.record("app.event", {"i": 1})
    [s1] = _sessions(root)
    record = json.loads((root / NS / ".last-seal.json").read_bytes())
    forged = dict(record, session="20991231T000000.000000Z-ff", size=5)  # claims a later session
    (root / NS / ".last-seal.json").write_text(json.dumps(forged))
    with _open(root) as led:
        pass
    s2 = _sessions(root)[-1]
    assert _lines(s2)[0]["data"]["prev"] == msgspec.structs.asdict(prev_link(verify_file(s1)))
    _assert_verifies(root / NS)
