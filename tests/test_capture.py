"""Tests for ledger.capture: bounded tcpdump captures recorded as evidence.

A real ``Ledger`` in tmp_path throughout; events are read back from the session
files as NDJSON. Which tcpdump runs where:

* pcap validity, the silent-host backstop and a bad interface: the real tcpdump on
  ``lo`` (skipped, saying why, without tcpdump or root), with real UDP traffic sent
  by the test for the validity check.
* the 1,000-request bursts (cooldown, de-dupe, severity floor, concurrency cap): the
  real tcpdump on ``lo`` against silent 127.x addresses when it can run, else a fake
  that writes a pcap header and sleeps; either way real child processes, ended by
  ``close()``, and no zombie left.
* argv, hostile input, failure causes, SIGKILL escalation, the cooldown window and
  eviction: a small fake tcpdump shell script written in tmp_path, because the
  thing under test is the manager, not tcpdump.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from ledger import Ledger
from ledger import capture as capture_mod
from ledger.capture import (
    CAPTURE_ID_PATTERN,
    CaptureFile,
    CaptureManager,
    CaptureOptions,
    capture_now,
    gc_captures,
    list_captures,
    plan_evictions,
    read_pcap,
)
from ledger.errors import LedgerError, UsageError

KEY = bytes(range(32))
TCPDUMP = shutil.which("tcpdump")
REAL_OK = TCPDUMP is not None and os.geteuid() == 0
needs_tcpdump = pytest.mark.skipif(not REAL_OK, reason="needs tcpdump on PATH and root to capture on lo")
ID_RE = re.compile(CAPTURE_ID_PATTERN)
# d4c3b2a1 (little-endian microseconds), version 2.4, zone 0, sigfigs 0, snaplen 262144, linktype 1
PCAP_HEADER_OCTAL = r"\324\303\262\241\002\000\004\000\000\000\000\000\000\000\000\000\000\000\004\000\001\000\000\000"
PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)


# ---- helpers ------------------------------------------------------------------------------


@pytest.fixture
def led(tmp_path):
    ledger = Ledger.open(tmp_path / "ledger", namespace="cap", hmac_key=KEY)
    yield ledger
    ledger.close()


def capture_events(led: Ledger) -> list[tuple[str, dict]]:
    """capture.* events as written, in order, decoded from the NDJSON session files."""
    assert led.flush(timeout=10)
    out = []
    for path in sorted(led.dir.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            event = msgspec.json.decode(line)
            if event["kind"].startswith("capture."):
                out.append((event["kind"], event["data"]))
    return out


def fake_tcpdump(tmp_path: Path, *, sleep: float = 0, body: str = "", header: bool = True) -> Path:
    """A stand-in that logs its argv (one per line) to tmp_path/argv/<pid>, writes a pcap
    header to its -w path (unless told not to), runs ``body``, then execs sleep."""
    logs = tmp_path / "argv"
    logs.mkdir(exist_ok=True)
    write = f"printf '{PCAP_HEADER_OCTAL}' > \"$out\"" if header else ""
    script = tmp_path / f"fake-tcpdump-{len(list(tmp_path.glob('fake-tcpdump-*')))}"
    script.write_text(
        "#!/bin/sh\n"
        'out=""; prev=""\n'
        'for a in "$@"; do\n'
        '  if [ "$prev" = "-w" ]; then out="$a"; fi\n'
        '  prev="$a"\n'
        "done\n"
        f"printf '%s\\n' \"$@\" > '{logs}/'$$\n"
        f"{write}\n{body}\n"
        f"exec sleep {sleep}\n"
    )
    script.chmod(0o755)
    return script


def logged_argvs(tmp_path: Path) -> list[list[str]]:
    logs = tmp_path / "argv"
    return [p.read_text().splitlines() for p in sorted(logs.iterdir())] if logs.exists() else []


def options(tmp_path: Path, **kw) -> CaptureOptions:
    base = {
        "capture_dir": str(tmp_path / "pcaps"),
        "interface": "lo",
        "duration_s": 1,
        "backstop_grace_s": 0.5,
        "kill_grace_s": 0.5,
        "per_cn_cooldown_s": 0,
    }
    return CaptureOptions.from_dict(base | kw)


def assert_no_children() -> None:
    kids = []
    for path in Path("/proc/self/task").glob("*/children"):
        kids += path.read_text().split()
    assert kids == [], f"child processes left: {kids}"
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def naive_pcap_records(data: bytes) -> list[bytes]:
    """A deliberately simple reader: magic, then (16-byte header, incl_len bytes) records."""
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}
    assert data[:4] in endian, f"not a pcap: {data[:4].hex()}"
    e = endian[data[:4]]
    assert struct.unpack(e + "HH", data[4:8]) == (2, 4)
    records, pos = [], 24
    while pos < len(data):
        _, _, incl, orig = struct.unpack(e + "IIII", data[pos : pos + 16])
        assert incl <= orig and pos + 16 + incl <= len(data)
        records.append(data[pos + 16 : pos + 16 + incl])
        pos += 16 + incl
    return records


def burst(fn, n: int = 1000, threads: int = 20) -> list:
    """Call fn(i) for i in range(n) from `threads` threads released at once."""
    results: list = [None] * n
    gate = threading.Barrier(threads)

    def worker(k: int) -> None:
        gate.wait()
        for i in range(k, n, threads):
            results[i] = fn(i)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results


def seed(capture_dir: Path, sizes: list[int]) -> list[str]:
    """Sealed-looking pcaps, one per size, oldest first (ids one second apart)."""
    capture_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ids = []
    for i, size in enumerate(sizes):
        cid = f"20260101T0000{i:02d}Z-{i:08x}"
        (capture_dir / f"{cid}.pcap").write_bytes(PCAP_HEADER + bytes(max(0, size - 24)))
        ids.append(cid)
    return ids


@pytest.fixture
def manager(led):
    """Make CaptureManagers that are closed (before the ledger) even when a test fails."""
    made: list[CaptureManager] = []

    def make(*args, **kw) -> CaptureManager:
        made.append(CaptureManager(led, *args, **kw))
        return made[-1]

    yield make
    for m in made:
        m.close()


@pytest.fixture
def burst_bin(tmp_path):
    """The real tcpdump when it can run here, else a fake that sleeps (see module docstring)."""
    return TCPDUMP if REAL_OK else str(fake_tcpdump(tmp_path, sleep=30))


def check_burst(led: Ledger, m: CaptureManager, decisions: list, expected: int) -> None:
    started = [d for d in decisions if d.started]
    assert len(started) == expected
    m.close()
    events = capture_events(led)
    starts = [d["capture_id"] for k, d in events if k == "capture.started"]
    ends = [d["capture_id"] for k, d in events if k in ("capture.sealed", "capture.failed")]
    assert sorted(starts) == sorted(ends) == sorted(d.capture_id for d in started)
    assert len(set(starts)) == expected
    assert all(d.done() for d in started)
    assert m.stats()["in_flight"] == 0
    assert_no_children()


# ---- the real tcpdump -------------------------------------------------------------------------


class UdpTraffic:
    """A marker datagram to 127.0.0.1 every 5 ms (200 packets/s) while in use."""

    def __init__(self) -> None:
        self.marker = b"ledger-capture-test-" + os.urandom(4).hex().encode()
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.sender = threading.Thread(target=self._send)

    def _send(self) -> None:
        port = self.rx.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            while not self.stop.is_set():
                tx.sendto(self.marker, ("127.0.0.1", port))
                self.stop.wait(0.005)

    def __enter__(self) -> UdpTraffic:
        self.sender.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sender.join()
        self.rx.close()


@needs_tcpdump
def test_real_capture_on_lo_is_a_valid_pcap_matching_its_pointer(tmp_path, led):
    with UdpTraffic() as traffic, CaptureManager(led, options(tmp_path, duration_s=3, backstop_grace_s=5)) as m:
        d = m.maybe_capture("alice", "127.0.0.1", "test traffic", "high", anomaly_id="an-1")
        assert d.started and ID_RE.match(d.capture_id)
        result = d.wait(timeout=15)
    assert result is not None and result.ok and result.outcome == "ok", result
    events = capture_events(led)
    assert [k for k, _ in events] == ["capture.started", "capture.sealed"]
    started, sealed = events[0][1], events[1][1]
    path = tmp_path / "pcaps" / f"{d.capture_id}.pcap"
    assert started["path"] == sealed["path"] == str(path)
    assert started["cn"] == sealed["cn"] == "alice" and sealed["anomaly_id"] == "an-1"
    assert sealed["exit"] == "timer:SIGINT" and sealed["outcome"] == "ok"  # ledger's timer, a clean end
    data = path.read_bytes()
    records = naive_pcap_records(data)
    assert records and any(traffic.marker in r for r in records)
    assert sealed["packets"] == len(records)
    assert sealed["bytes"] == len(data) == path.stat().st_size
    assert sealed["sha256"] == hashlib.sha256(data).hexdigest()
    assert 3000 <= sealed["duration_ms"] < 5000  # the duration, well before the backstop
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert_no_children()


@needs_tcpdump
def test_real_one_second_capture_under_traffic_captures_packets_3_of_3(tmp_path, led):
    """Issue 12 item 5: ``-G 1`` rotated (and exited) at the next whole second, 0 packets
    in 4 of 4 runs at 200 packets/s. Now the capture lasts its second, every time."""
    results = []
    with UdpTraffic(), CaptureManager(led, options(tmp_path, duration_s=1, backstop_grace_s=2)) as m:
        for i in range(3):
            results.append(m.capture(f"run{i}", "127.0.0.1", "one second", duration_s=1).wait(timeout=10))
    for r in results:
        assert r is not None and r.ok and r.outcome == "ok", r
        assert r.event.exit == "timer:SIGINT"
        assert r.event.duration_ms >= 1000
        # 200 packets/s for a second; a wide margin for a loaded 2-core machine.
        assert r.event.packets >= 50, [x.event.packets for x in results]
        assert r.event.packets == len(naive_pcap_records(Path(r.event.path).read_bytes()))
    assert_no_children()


@needs_tcpdump
def test_real_tcpdump_silent_host_is_ended_on_time_and_sealed_empty(tmp_path, led):
    opts = options(tmp_path, duration_s=1, backstop_grace_s=0.5, kill_grace_s=1)
    with CaptureManager(led, opts) as m:
        t0 = time.monotonic()
        d = m.maybe_capture("bob", "127.0.0.77", "silent", "high")
        result = d.wait(timeout=10)
        elapsed = time.monotonic() - t0
        assert m.stats()["outcomes"] == {"sealed": 1, "failed": 0, "empty": 1}
    assert result is not None and result.ok and result.outcome == "empty"
    # A silent host no longer needs the backstop: ledger's timer ends it with a SIGINT.
    assert result.event.exit == "timer:SIGINT"
    assert 1.0 <= elapsed < 1.5 + 0.5, elapsed  # startup + 1 s; a SIGTERM would be 0.5 s later
    data = Path(result.event.path).read_bytes()
    assert naive_pcap_records(data) == [] and result.event.packets == 0
    assert result.event.sha256 == hashlib.sha256(data).hexdigest()
    events = capture_events(led)
    assert [k for k, _ in events] == ["capture.started", "capture.sealed"]
    assert events[1][1]["outcome"] == "empty" and events[1][1]["packets"] == 0  # recorded as empty, never ok
    assert_no_children()


@needs_tcpdump
def test_a_forking_tcpdump_wrapper_frees_its_slot_on_time(tmp_path, led):
    """Issue 12 item 5: the backstop signalled only the direct child, and a wrapper's
    child kept tcpdump's stderr open (and the concurrency slot) for 60 s. The whole
    process group is signalled now, and what outlives tcpdump is killed."""
    left = tmp_path / "left.pid"
    wrapper = tmp_path / "tcpdump-wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        # A child that ignores SIGINT and SIGTERM and inherits stderr, as a logger might.
        f"(trap '' INT TERM; exec sleep 60) & echo $! > '{left}'\n"
        f'exec {TCPDUMP} "$@"\n'
    )
    wrapper.chmod(0o755)
    opts = options(
        tmp_path, tcpdump_bin=str(wrapper), duration_s=1, max_concurrent=1, backstop_grace_s=1, kill_grace_s=1
    )
    with CaptureManager(led, opts) as m:
        t0 = time.monotonic()
        d = m.maybe_capture("erin", "127.0.0.78", "wrapped", "high")
        result = d.wait(timeout=20)
        freed = time.monotonic() - t0
        assert m.stats()["in_flight"] == 0
        assert m.maybe_capture("erin2", "127.0.0.79", "next", "high").started  # the slot is free
    assert result is not None and result.ok and result.event.exit == "timer:SIGINT"
    assert freed < 1 + 1 + 1, freed  # duration + grace, not the 60 s of the orphan
    pid = int(left.read_text())

    def gone() -> bool:
        try:
            return "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return True

    # SIGKILL was sent; on a loaded machine the orphan may not have been scheduled to die yet.
    deadline = time.monotonic() + 5
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()
    assert_no_children()


@needs_tcpdump
def test_real_tcpdump_bad_interface_is_a_failure_with_its_cause(tmp_path, led):
    with CaptureManager(led, options(tmp_path, interface="nosuchif0")) as m:
        result = m.maybe_capture("carol", "127.0.0.1", "x", "high").wait(timeout=10)
    assert result is not None and not result.ok
    assert "nosuchif0" in result.event.cause
    assert [k for k, _ in capture_events(led)] == ["capture.started", "capture.failed"]
    assert list((tmp_path / "pcaps").iterdir()) == []
    assert_no_children()


# ---- guards under a burst of 1,000 requests from 20 threads ---------------------------


def test_cooldown_holds_under_burst(tmp_path, led, manager, burst_bin):
    m = manager(options(tmp_path, tcpdump_bin=burst_bin, duration_s=5, per_cn_cooldown_s=300))
    decisions = burst(lambda i: m.maybe_capture("alice", f"127.1.{i // 200}.{i % 200 + 1}", "burst", "high"))
    assert m.stats()["skips"]["cooldown"] == 999
    check_burst(led, m, decisions, expected=1)


@pytest.mark.parametrize("same", ["cn", "ip"])
def test_in_flight_dedupe_holds_under_burst(tmp_path, led, manager, burst_bin, same):
    """No cooldown: only the capture already running stops the others (same CN, or same IP)."""
    m = manager(options(tmp_path, tcpdump_bin=burst_bin, duration_s=5, max_concurrent=8))

    def request(i: int):
        cn, ip = ("alice", f"127.1.{i // 200}.{i % 200 + 1}") if same == "cn" else (f"u{i}", "127.0.0.5")
        return m.maybe_capture(cn, ip, "burst", "critical")

    decisions = burst(request)
    assert m.stats()["skips"]["in_flight"] == 999
    check_burst(led, m, decisions, expected=1)


def test_severity_floor_holds_under_burst(tmp_path, led, manager, burst_bin):
    """20 clients, each asking 50 times at low, medium, high, critical in turn; floor high."""
    opts = options(tmp_path, tcpdump_bin=burst_bin, duration_s=5, min_severity="high", per_cn_cooldown_s=300)
    m = manager({**msgspec.structs.asdict(opts), "max_concurrent": 20})
    severities = ("low", "medium", "high", "critical")

    def request(i: int):
        client = i % 20
        return m.maybe_capture(f"c{client}", f"127.2.0.{client + 1}", "burst", severities[(i // 20) % 4])

    decisions = burst(request)
    skips = m.stats()["skips"]
    # Per client: 50 requests, 26 below the floor (13 low, 13 medium), 24 at high+.
    assert (skips["severity"], skips["cooldown"]) == (520, 460)
    assert all(d.skipped == "severity" for i, d in enumerate(decisions) if (i // 20) % 4 < 2)
    check_burst(led, m, decisions, expected=20)
    started = [d for k, d in capture_events(led) if k == "capture.started"]
    assert sorted(d["cn"] for d in started) == sorted(f"c{k}" for k in range(20))
    assert {d["severity"] for d in started} <= {"high", "critical"}


def test_concurrency_cap_holds_under_burst(tmp_path, led, manager, burst_bin):
    m = manager(options(tmp_path, tcpdump_bin=burst_bin, duration_s=5, max_concurrent=4))
    decisions = burst(lambda i: m.maybe_capture(f"u{i}", f"127.3.{i // 200}.{i % 200 + 1}", "burst", "high"))
    assert m.stats()["skips"]["concurrency"] == 996
    check_burst(led, m, decisions, expected=4)


def test_a_client_tripping_every_two_seconds_gets_one_capture_per_cooldown_window(tmp_path, led):
    now = [0.0]
    opts = options(tmp_path, tcpdump_bin=str(fake_tcpdump(tmp_path)), per_cn_cooldown_s=300)
    with CaptureManager(led, opts, clock=lambda: now[0]) as m:
        started_at = []
        for t in range(0, 901, 2):
            now[0] = float(t)
            d = m.maybe_capture("alice", "10.1.2.3", "trip", "high")
            if d.started:
                started_at.append(t)
                assert d.wait(timeout=10).ok
    assert started_at == [0, 300, 600, 900]
    assert m.stats()["skips"]["cooldown"] == 451 - 4
    assert sum(k == "capture.sealed" for k, _ in capture_events(led)) == 4


# ---- argv and hostile input ----------------------------------------------------------------


def test_argv_is_exactly_the_bounded_tcpdump_command(tmp_path, led):
    fake = fake_tcpdump(tmp_path)
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake), snaplen=96, duration_s=7)) as m:
        d = m.maybe_capture("alice", "0:0:0:0:0:0:0:1", "x", "high")
        assert d.wait(timeout=10).ok
    path = str(tmp_path / "pcaps" / f"{d.capture_id}.pcap")
    # No -G: the duration is ledger's timer (a whole-second rotation cut captures short).
    expected = ["-i", "lo", "-n", "-s", "96", "--immediate-mode", "-U", "-w", path, "-Z", "root", "host", "::1"]
    assert logged_argvs(tmp_path) == [expected]


HOSTILE_CNS_ACCEPTED = [
    "../../etc/passwd",
    "$(touch /tmp/pwned-ledger); `id` | rm -rf / && echo ; > x < y * ? ' \" \\",
    "-w/etc/x",
    "%s%n%Y/../..",
    "имя пользователя",
]
HOSTILE_CNS_REFUSED = ["x" * 10_240, "a\nb", "a\x00b", "\x1b[31m", "", None, b"alice", 42]


def test_hostile_cn_never_reaches_argv_or_a_path(tmp_path, led):
    fake = fake_tcpdump(tmp_path)
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake))) as m:
        for cn in HOSTILE_CNS_REFUSED:
            d = m.maybe_capture(cn, "10.0.0.1", "hostile", "high")
            assert (d.started, d.skipped) == (False, "invalid_cn"), cn
        for i, cn in enumerate(HOSTILE_CNS_ACCEPTED):
            d = m.maybe_capture(cn, f"10.0.0.{i + 2}", "hostile", "high")
            assert d.started and d.wait(timeout=10).ok
    events = capture_events(led)
    started = [d for k, d in events if k == "capture.started"]
    assert [d["cn"] for d in started] == HOSTILE_CNS_ACCEPTED  # kept exactly, as data
    for data in started:
        assert data["path"] == str(tmp_path / "pcaps" / f"{data['capture_id']}.pcap")
        assert ID_RE.match(data["capture_id"])
    for argv in logged_argvs(tmp_path):
        assert not any(cn in arg for cn in HOSTILE_CNS_ACCEPTED for arg in argv)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["argv", "ledger", "pcaps", fake.name]
    )  # nothing created outside
    assert not Path("/tmp/pwned-ledger").exists()
    assert m.stats()["skips"]["invalid_cn"] == len(HOSTILE_CNS_REFUSED)


HOSTILE_IPS = [
    "1.2.3.4 or port 22",
    "-w/etc/x",
    "1.2.3.4; rm -rf /",
    "127.0.0.1\n",
    " 127.0.0.1",
    "fe80::1%eth0",
    "localhost",
    "1.2.3.4/32",
    "01.2.3.4",
    "0x7f000001",
    "",
    None,
    2130706433,
]


def test_hostile_ip_is_refused_before_any_process(tmp_path, led):
    fake = fake_tcpdump(tmp_path)
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake))) as m:
        for i, ip in enumerate(HOSTILE_IPS):
            d = m.maybe_capture(f"c{i}", ip, "hostile", "critical")
            assert (d.started, d.skipped, d.wait(0)) == (False, "invalid_ip", None), ip
        assert m.stats()["skips"]["invalid_ip"] == len(HOSTILE_IPS)
    assert capture_events(led) == []
    assert logged_argvs(tmp_path) == []
    assert list((tmp_path / "pcaps").iterdir()) == []


def test_invalid_reason_severity_or_duration_is_refused(tmp_path, led):
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake_tcpdump(tmp_path)))) as m:
        assert m.maybe_capture("a", "10.0.0.1", "r", "urgent").skipped == "invalid"
        assert m.maybe_capture("a", "10.0.0.1", "r", ["high"]).skipped == "invalid"
        assert m.maybe_capture("a", "10.0.0.1", "r" * 300, "high").skipped == "invalid"
        assert m.maybe_capture("a", "10.0.0.1", "r", "high", anomaly_id="x\ny").skipped == "invalid"
        assert m.capture("a", "10.0.0.1", "r", duration_s=0).skipped == "invalid"
        assert m.capture("a", "10.0.0.1", "r", duration_s=True).skipped == "invalid"
    assert capture_events(led) == []


# ---- ending captures -----------------------------------------------------------------------


def test_backstop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path, led):
    fake = fake_tcpdump(tmp_path, sleep=60, body="trap '' INT TERM")  # ignored, and still after exec
    opts = options(tmp_path, tcpdump_bin=str(fake), duration_s=1, backstop_grace_s=0.3, kill_grace_s=0.3)
    with CaptureManager(led, opts) as m:
        t0 = time.monotonic()
        result = m.maybe_capture("dave", "10.0.0.9", "x", "high").wait(timeout=10)
        elapsed = time.monotonic() - t0
    assert result.ok and result.event.exit == "backstop:SIGKILL"
    assert 1.6 <= elapsed < 2.6, elapsed  # start grace 0.3 + 1 s + SIGINT, SIGTERM 0.3 s apart
    assert_no_children()


def test_close_ends_running_captures_and_they_are_still_sealed(tmp_path, led, manager):
    fake = fake_tcpdump(tmp_path, sleep=60)
    m = manager(options(tmp_path, tcpdump_bin=str(fake), duration_s=60))
    ds = [m.maybe_capture(f"c{i}", f"10.0.1.{i}", "x", "high") for i in (1, 2)]
    assert all(d.started for d in ds)
    time.sleep(0.2)  # let the fakes write their header
    t0 = time.monotonic()
    m.close()
    assert time.monotonic() - t0 < 2
    assert [d.wait(0).event.exit for d in ds] == ["closed:SIGTERM"] * 2
    assert m.maybe_capture("c3", "10.0.1.3", "x", "high").skipped == "closed"
    m.close()  # idempotent
    kinds = [k for k, _ in capture_events(led)]
    assert kinds.count("capture.started") == kinds.count("capture.sealed") == 2
    assert_no_children()


@pytest.mark.parametrize(
    ("body", "header", "cause"),
    [
        ("echo 'tcpdump: lo: You do not have permission' >&2; exit 1", True, "tcpdump exited 1: tcpdump: lo: You do"),
        ("printf 'garbage' > \"$out\"", False, "not a pcap (7 bytes, exit:0)"),
        ("", False, "tcpdump wrote no pcap"),
        ("kill -9 $$", True, "tcpdump killed by SIGKILL"),
    ],
)
def test_failures_are_recorded_with_their_cause_and_leave_no_file(tmp_path, led, body, header, cause):
    fake = fake_tcpdump(tmp_path, body=body, header=header)
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake))) as m:
        result = m.maybe_capture("erin", "10.0.0.1", "x", "high").wait(timeout=10)
    assert not result.ok and result.event.cause.startswith(cause), result.event.cause
    events = capture_events(led)
    assert [k for k, _ in events] == ["capture.started", "capture.failed"]
    assert events[1][1]["cause"] == result.event.cause
    assert list((tmp_path / "pcaps").iterdir()) == []
    assert m.stats()["outcomes"] == {"sealed": 0, "failed": 1, "empty": 0}


def test_no_thread_to_be_had_is_a_recorded_failure(tmp_path, led, monkeypatch):
    class NoThread(threading.Thread):
        def start(self):
            raise RuntimeError("can't start new thread")

    shim = SimpleNamespace(Thread=NoThread, Lock=threading.Lock, Event=threading.Event)
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake_tcpdump(tmp_path)))) as m:
        monkeypatch.setattr(capture_mod, "threading", shim)
        d = m.maybe_capture("gina", "10.0.0.1", "x", "high")
        monkeypatch.undo()
        assert d.started and d.done() and not d.wait(0).ok
        assert m.stats()["in_flight"] == 0
        assert m.maybe_capture("gina2", "10.0.0.1", "x", "high").wait(timeout=10).ok  # the IP was freed
    kinds = [k for k, _ in capture_events(led)]
    assert kinds[:2] == ["capture.started", "capture.failed"]
    assert logged_argvs(tmp_path) and len(logged_argvs(tmp_path)) == 1


def test_missing_tcpdump_is_a_recorded_failure(tmp_path, led):
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(tmp_path / "no-such-tcpdump"))) as m:
        result = m.maybe_capture("frank", "10.0.0.1", "x", "high").wait(timeout=10)
    assert not result.ok and result.event.cause.startswith("cannot run")
    assert [k for k, _ in capture_events(led)] == ["capture.started", "capture.failed"]


def test_capture_now_for_the_cli(tmp_path, led):
    opts = options(tmp_path, tcpdump_bin=str(fake_tcpdump(tmp_path)), min_severity="critical", per_cn_cooldown_s=300)
    result = capture_now(led, opts, "alice", "10.0.0.1", "operator asked", duration_s=3)
    assert result.ok and Path(result.event.path).exists()
    again = capture_now(led, opts, "alice", "10.0.0.1", "again")  # no cooldown for an operator
    assert again.ok
    with pytest.raises(UsageError, match="invalid ip"):
        capture_now(led, opts, "alice", "1.2.3.4 or port 22", "x")
    started = [d for k, d in capture_events(led) if k == "capture.started"]
    assert [d["severity"] for d in started] == ["manual", "manual"]
    assert [d["duration_s"] for d in started] == [3.0, 1.0]  # the operator's, then the default
    assert [f.capture_id for f in list_captures(opts)] == [d["capture_id"] for d in started]


# ---- eviction ------------------------------------------------------------------------------


def evicted_events(led: Ledger) -> list[dict]:
    return [d for k, d in capture_events(led) if k == "capture.evicted"]


def remaining(capture_dir: Path) -> list[str]:
    return sorted(p.name.removesuffix(".pcap") for p in capture_dir.glob("2*.pcap"))


def test_gc_by_file_count_oldest_first(tmp_path, led):
    pcaps = tmp_path / "pcaps"
    ids = seed(pcaps, [100] * 6)
    (pcaps / "notes.txt").write_text("not ours")
    (pcaps / "x.pcap").write_bytes(PCAP_HEADER)
    with CaptureManager(led, options(tmp_path, max_files=4)) as m:
        plan = m.gc()
    assert [e.capture_id for e in plan] == ids[:2]
    assert remaining(pcaps) == ids[2:]
    assert (pcaps / "notes.txt").exists() and (pcaps / "x.pcap").exists()
    assert evicted_events(led) == [
        {"capture_id": cid, "path": str(pcaps / f"{cid}.pcap"), "bytes": 100, "reason": "max_files", "offloaded": False}
        for cid in ids[:2]
    ]


def test_gc_by_bytes_oldest_first(tmp_path, led):
    pcaps = tmp_path / "pcaps"
    ids = seed(pcaps, [500, 100, 300, 200, 400])
    with CaptureManager(led, options(tmp_path, max_bytes=700)) as m:
        m.gc()
        assert m.stats()["local_bytes"] == 600
    assert remaining(pcaps) == ids[3:]
    assert [(e["capture_id"], e["reason"], e["bytes"]) for e in evicted_events(led)] == [
        (ids[0], "max_bytes", 500),
        (ids[1], "max_bytes", 100),
        (ids[2], "max_bytes", 300),
    ]


def test_gc_until_both_budgets_hold(tmp_path, led):
    pcaps = tmp_path / "pcaps"
    ids = seed(pcaps, [100, 100, 1000, 100, 100])
    with CaptureManager(led, options(tmp_path, max_files=4, max_bytes=500)) as m:
        m.gc()
        assert m.gc() == []  # nothing more to do
    assert [e["reason"] for e in evicted_events(led)] == ["max_files", "max_bytes", "max_bytes"]
    assert remaining(pcaps) == ids[3:]


def test_gc_evicts_offloaded_first_and_says_when_a_capture_was_not(tmp_path, led):
    pcaps = tmp_path / "pcaps"
    ids = seed(pcaps, [100] * 5)
    offloaded = {ids[2], ids[3]}
    with CaptureManager(led, options(tmp_path, max_files=2), is_offloaded=offloaded.__contains__) as m:
        m.gc()
    assert [(e["capture_id"], e["offloaded"]) for e in evicted_events(led)] == [
        (ids[2], True),
        (ids[3], True),
        (ids[0], False),
    ]
    assert remaining(pcaps) == [ids[1], ids[4]]


def test_gc_records_and_flushes_each_eviction_before_the_unlink(tmp_path, led, monkeypatch):
    pcaps = tmp_path / "pcaps"
    seed(pcaps, [100] * 5)
    seen = []
    real_unlink = capture_mod._unlink

    def unlink(path):
        on_disk = b"".join(p.read_bytes() for p in led.dir.glob("*.ndjson"))  # no flush here
        assert f'"capture.evicted","data":{{"capture_id":"{Path(path).stem}"'.encode() in on_disk
        assert Path(path).exists()
        seen.append(path)
        real_unlink(path)

    monkeypatch.setattr(capture_mod, "_unlink", unlink)
    with CaptureManager(led, options(tmp_path, max_files=2)) as m:
        assert len(m.gc()) == 3
    assert len(seen) == 3


def test_gc_deletes_nothing_when_the_ledger_cannot_record(tmp_path, led, manager):
    pcaps = tmp_path / "pcaps"
    ids = seed(pcaps, [100] * 3)
    m = manager(options(tmp_path, max_files=1))
    led.close()
    with pytest.raises(LedgerError, match="no pcap deleted"):
        m.gc()
    assert remaining(pcaps) == ids
    m.close()


def test_gc_dry_run_changes_nothing(tmp_path, led):
    pcaps = tmp_path / "pcaps"
    ids = seed(pcaps, [100] * 4)
    opts = options(tmp_path, max_files=1)
    with CaptureManager(led, opts) as m:
        assert [e.capture_id for e in m.gc(dry_run=True)] == ids[:3]
    assert [e.capture_id for e in gc_captures(None, opts, dry_run=True)] == ids[:3]
    assert remaining(pcaps) == ids
    assert evicted_events(led) == []
    assert [e.capture_id for e in gc_captures(led, opts)] == ids[:3]
    assert remaining(pcaps) == ids[3:]


def test_gc_dry_run_is_the_real_plan_with_a_capture_in_flight(tmp_path, led):
    """Issue 12 item 5: the dry run listed a pcap tcpdump was still writing as "would
    evict"; the running manager's gc never would. Both go through one plan now."""
    ledger_root = tmp_path / "ledger"
    pcaps = capture_mod.default_capture_dir(ledger_root, "cap")
    ids = seed(pcaps, [100] * 3)
    fake = fake_tcpdump(tmp_path, sleep=60)
    opts = options(tmp_path, tcpdump_bin=str(fake), capture_dir=str(pcaps), max_files=1, duration_s=60)
    with CaptureManager(led, opts) as m:
        d = m.maybe_capture("zed", "10.0.0.5", "x", "high")
        for _ in range(100):  # the fake writes its header at once
            if (pcaps / f"{d.capture_id}.pcap").exists():
                break
            time.sleep(0.02)
        assert led.flush(timeout=10)
        out = cli(["gc", "--dry-run", "--max-files", "1", "--root", str(ledger_root), "--namespace", "cap"])
        assert out.returncode == 0, out.stderr
        dry = re.findall(r"would evict (\S+)", out.stdout)
        dry_lib = [e.capture_id for e in gc_captures(None, opts, dry_run=True, in_flight=[d.capture_id])]
        real = [e.capture_id for e in m.gc()]
        assert d.capture_id not in dry
        assert dry == dry_lib == real == ids[:2], (dry, dry_lib, real)
        assert (pcaps / f"{d.capture_id}.pcap").exists()


def cli(args: list[str]):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_gc_runs_after_each_seal(tmp_path, led):
    fake = fake_tcpdump(tmp_path)
    with CaptureManager(led, options(tmp_path, tcpdump_bin=str(fake), max_files=2)) as m:
        ids = []
        for i in range(3):
            d = m.maybe_capture(f"c{i}", "10.0.0.1", "x", "high")
            assert d.wait(timeout=10).ok
            ids.append(d.capture_id)
            time.sleep(0.01)  # distinct mtimes within one second
        assert [f.capture_id for f in m.captures()] == ids[1:]
    assert [e["capture_id"] for e in evicted_events(led)] == [ids[0]]
    assert remaining(tmp_path / "pcaps") == sorted(ids[1:])


def test_plan_evictions_is_pure_and_ordered():
    files = [
        CaptureFile(capture_id=f"20260101T00000{i}Z-0000000{i}", path=f"/p/{i}", bytes=10, mtime_ns=i, offloaded=i == 3)
        for i in range(5)
    ]
    plan = plan_evictions(reversed(files), max_files=3, max_bytes=10**9)
    assert [(e.capture_id[-1], e.reason, e.offloaded) for e in plan] == [
        ("3", "max_files", True),
        ("0", "max_files", False),
    ]
    assert plan_evictions(files, max_files=5, max_bytes=50) == []


def test_read_pcap_counts_complete_records_and_reports_a_torn_tail(tmp_path):
    rec = struct.pack("<IIII", 1, 2, 3, 3) + b"abc"
    path = tmp_path / "t.pcap"
    path.write_bytes(PCAP_HEADER + rec * 2 + rec[:10])
    info = read_pcap(path)
    assert (info.packets, info.torn_bytes, info.bytes) == (2, 10, 24 + 2 * 19 + 10)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    assert read_pcap(path).packets is None


# ---- options ---------------------------------------------------------------------------------


def test_options_defaults_and_validation(tmp_path, led):
    opts = CaptureOptions()
    assert (opts.min_severity, opts.per_cn_cooldown_s, opts.max_concurrent, opts.interface) == ("medium", 300, 4, "any")
    assert CaptureOptions.from_dict({"capture_dir": tmp_path}).capture_dir == str(tmp_path)
    for bad in (
        {"duration_s": 0},
        {"duration_s": 1.5},
        {"min_severity": "urgent"},
        {"bogus": 1},
        {"interface": "-w/etc/x"},
        {"interface": "lo or port 22"},
        {"max_concurrent": 0},
        {"snaplen": "big"},
        {"max_bytes": -1},
        {"tcpdump_bin": "a\x00b"},
    ):
        with pytest.raises(UsageError, match="invalid capture option"):
            CaptureOptions.from_dict(bad)
    with pytest.raises(UsageError):
        CaptureManager(led, {"capture_dir": str(tmp_path), "bogus": 1})
    with pytest.raises(UsageError):
        CaptureOptions.from_dict(["not", "a", "mapping"])


@needs_tcpdump
def test_demo_pcaps_land_where_gc_and_captures_look(tmp_path):
    """Issue 12 item 5: demo wrote pcaps to DIR/captures, where neither ``ledger gc``
    nor ``ledger captures`` (``<root>/<namespace>/captures``) ever looks."""
    from ledger.demo import NAMESPACE, run_demo

    result = run_demo(tmp_path / "demo", seconds=2, clients=4, seed=1)
    assert result.anomalies and result.captures, result.capture_note
    where = capture_mod.default_capture_dir(result.ledger_dir, NAMESPACE)
    on_disk = sorted(p.name.removesuffix(".pcap") for p in where.glob("*.pcap"))
    assert on_disk == sorted(c.capture_id for c in result.captures)
    assert not (tmp_path / "demo" / "captures").exists()
    root = ["--root", str(result.ledger_dir), "--namespace", NAMESPACE]
    listed = msgspec.json.decode(cli(["captures", "--json", *root]).stdout)
    assert sorted(c["capture_id"] for c in listed if c["local"]) == on_disk
    assert all(Path(c["path"]).parent == where for c in listed)
    out = cli(["gc", "--dry-run", "--max-files", "1", "--max-bytes", "1", *root])
    assert out.returncode == 0, out.stderr
    assert sorted(re.findall(r"would evict (\S+)", out.stdout)) == on_disk  # gc sees them


@needs_tcpdump
def test_cli_capture_duration_1_under_traffic_has_packets_and_a_silent_one_is_empty(tmp_path):
    """The issue's own reproduction: ``ledger capture --duration 1`` at 200 packets/s gave
    0 packets in 4 of 4 runs, sealed as a success."""
    from ledger import keys as keymod

    key_file = tmp_path / "hmac.key"
    keymod.write_key_file(key_file)
    common = ["--root", str(tmp_path / "root"), "--namespace", "cap", "--key-file", str(key_file)]
    common += ["--interface", "lo", "--duration", "1", "--cn", "op", "--reason", "repro"]
    packets = []
    with UdpTraffic():
        for _ in range(3):
            out = cli(["capture", "--ip", "127.0.0.1", *common])
            assert out.returncode == 0, out.stderr
            event = msgspec.json.decode(out.stdout)
            assert event["outcome"] == "ok" and event["exit"] == "timer:SIGINT"
            packets.append(event["packets"])
    assert all(n > 0 for n in packets), packets
    silent = cli(["capture", "--ip", "127.0.0.77", *common])
    event = msgspec.json.decode(silent.stdout)
    assert (event["packets"], event["outcome"]) == (0, "empty")
    assert f"capture {event['capture_id']} is empty" in silent.stderr
