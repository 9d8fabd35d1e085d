"""Tests for `ledger tail` (ledger/tail.py and the tail command).

Most run `python -m ledger.cli tail ...` as a real subprocess and read its stdout on
a reader thread with timeouts (a hang fails instead of blocking), while the test
appends through the real writer (``Ledger``) or, where bytes must be placed
exactly (a partial line, a sparse 16 GiB file), through ``SessionBuilder``.
The library parts (backward reading, --since, the incremental verifier) are also
checked in-process, the verifier against every tamper fixture's expected verdict.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from ledger import Ledger, fsseal, notes
from ledger.format import PrevLink, format_ts
from ledger.session import SessionBuilder
from ledger.tail import TailEvent, TailOptions, TailVerifier, follow, last_boundary, lines_backward, parse_since
from ledger.verify import Policy, verify_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
KEY = bytes(range(32))
SESSION = "20261123T200000.000000Z-t1"
WAIT = 10.0  # generous per-step timeout; a pass takes milliseconds


# ---- helpers ----------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "LEDGER_TAIL_POLL", "LEDGER_HMAC_KEY_FILE")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


class Tail:
    """`ledger tail ARGS` as a subprocess; stdout lines arrive on a queue with their arrival time."""

    def __init__(self, *args: object, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "tail", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or _env(),
            cwd=REPO,
        )
        self.lines: queue.Queue = queue.Queue()
        self.stderr = b""
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def _read_err(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr += line

    def stderr_has(self, text: bytes, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while text not in self.stderr and time.monotonic() < deadline:
            time.sleep(0.02)
        return text in self.stderr

    def line(self, timeout: float = WAIT) -> bytes:
        try:
            _, line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s; stderr so far: {self.stderr!r}") from None
        assert line is not None, f"tail ended early (rc {self.proc.wait(WAIT)}): {self.stderr!r}"
        return line

    def take(self, n: int, timeout: float = WAIT) -> list[bytes]:
        return [self.line(timeout) for _ in range(n)]

    def nothing_for(self, seconds: float) -> bool:
        try:
            self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def wait(self, timeout: float = WAIT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tail did not exit within {timeout} s; stderr: {self.stderr!r}") from None
        time.sleep(0.05)  # let the stderr thread finish
        return rc

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def tails():
    started: list[Tail] = []

    def start(*args: object, **kw) -> Tail:
        t = Tail(*args, **kw)
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


@pytest.fixture
def ledgers():
    opened: list[Ledger] = []

    def open_(root: Path, namespace: str = "edge-1", **options) -> Ledger:
        led = Ledger.open(root, namespace=namespace, hmac_key=KEY, **options)
        opened.append(led)
        return led

    yield open_
    for led in opened:
        led.close(timeout=WAIT)


def seqs(lines: list[bytes]) -> list[int]:
    return [json.loads(x)["seq"] for x in lines]


def session_file(root: Path, lines: int, checkpoint_every: int = 0) -> tuple[Path, SessionBuilder, list[bytes]]:
    """A session file with ``lines`` lines (line 0 included), as the writer would make it."""
    d = root / "edge-1"
    d.mkdir(parents=True, exist_ok=True)
    b = SessionBuilder("edge-1", SESSION, [KEY])
    t0 = 1_795_000_000.0
    out = [b.opened_line(format_ts(t0))]
    while len(out) < lines:
        i = len(out)
        if checkpoint_every and i % checkpoint_every == 0:
            out.append(b.checkpoint_line(format_ts(t0 + i)))
        else:
            kind = ("capture.sealed", "upload.done", "deletion.local")[i % 3]
            out.append(b.line(kind, b'{"i":%d,"cn":"client-%d"}' % (i, i % 7), format_ts(t0 + i)))
    path = d / f"{SESSION}.ndjson"
    path.write_bytes(b"".join(out))
    return path, b, out


# ---- following a live ledger ----------------------------------------------------------


@pytest.mark.parametrize("poll", [False, True], ids=["inotify", "polling"])
def test_follow_prints_each_event_in_order_as_it_is_written(tmp_path, tails, ledgers, poll):
    led = ledgers(tmp_path, durability="none")
    assert led.flush(WAIT)
    t = tails("-f", "-n", "1", "--json", tmp_path / "edge-1", env=_env(LEDGER_TAIL_POLL="1" if poll else "0"))
    assert json.loads(t.line())["kind"] == "session.opened"  # tail is following now
    latencies = []
    for i in range(1, 31):
        start = time.monotonic()
        led.record("capture.sealed", {"i": i})
        assert led.flush(WAIT)
        arrived, line = t.lines.get(timeout=WAIT)
        latencies.append(arrived - start)
        ev = json.loads(line)
        assert (ev["seq"], ev["kind"], ev["data"]) == (i, "capture.sealed", {"i": i})
    for i in range(31, 131):  # a burst: nothing lost, nothing reordered
        led.record("upload.done", {"i": i})
    assert led.flush(WAIT)
    assert [json.loads(x)["data"].get("i") for x in t.take(100)] == list(range(31, 131))
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.1, latencies  # the 100 ms (bench: tools/bench_tail.py)


def test_rotation_is_followed_and_archival_of_old_sessions_is_survived(tmp_path, tails, ledgers):
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex())
    root = tmp_path / "root"
    led = ledgers(root, durability="none", rotate_bytes=4096)
    assert led.flush(WAIT)
    t = tails("-f", "-n", "1", "--json", "--verify", "--key-file", key_file, root)
    assert json.loads(t.line())["kind"] == "session.opened"
    got: list[dict] = []
    opened: set[str] = set()
    pad = "x" * 120
    for batch in range(12):
        for j in range(10):
            led.record("capture.sealed", {"i": batch * 10 + j, "pad": pad})
        assert led.flush(WAIT)
        while len([e for e in got if e["kind"] == "capture.sealed"]) < (batch + 1) * 10:
            ev = json.loads(t.line())
            got.append(ev)
            if ev["kind"] == "session.opened":
                opened.add(ev["data"]["session"])
        # archival: delete every sealed session tail has already opened
        newest = max(p.name for p in (root / "edge-1").glob("*.ndjson"))
        for p in (root / "edge-1").glob("*.ndjson"):
            if p.name != newest and p.name[: -len(".ndjson")] in opened:
                p.unlink()
    captures = [e["data"]["i"] for e in got if e["kind"] == "capture.sealed"]
    assert captures == list(range(120))
    seals = [e for e in got if e["kind"] == "session.sealed"]
    assert len(seals) >= 5 and all(s["data"]["reason"] == "rotated" for s in seals)
    # each session's lines arrive whole and in order: seq restarts at 0 after every seal
    expected = 1
    for e in got:
        assert e["seq"] == (0 if e["kind"] == "session.opened" else expected), e
        expected = e["seq"] + 1
    assert t.proc.poll() is None, t.stderr
    assert t.stderr_has(b"as it is written") and b"verifying edge-1/" in t.stderr, t.stderr


def test_human_output_prints_a_rule_between_sessions_without_colour_when_piped(tmp_path, tails, ledgers):
    led = ledgers(tmp_path, durability="none", rotate_bytes=4096)
    assert led.flush(WAIT)
    t = tails("-f", "-n", "1", tmp_path / "edge-1")
    assert b"session.opened" in t.line()
    for batch in range(6):  # the writer rotates between batches
        for i in range(batch * 10, batch * 10 + 10):
            led.record("deletion.local", {"i": i, "pad": "y" * 100})
        assert led.flush(WAIT)
    out: list[bytes] = []
    while sum(b"deletion.local" in x for x in out) < 60 or sum(x.startswith("─".encode()) for x in out) < sum(
        b"session.sealed" in x for x in out
    ):
        out.append(t.line())
    text = b"".join(out).decode()
    assert "\x1b[" not in text
    rules = [x for x in text.splitlines() if x.startswith("─")]
    sealed = [x for x in text.splitlines() if "session.sealed" in x]
    assert len(rules) == len(sealed) >= 2
    assert all("edge-1 · 2" in r for r in rules)
    assert "i=59 pad=yyyy" in text


def test_a_namespace_created_while_following_a_root_is_picked_up(tmp_path, tails, ledgers):
    a = ledgers(tmp_path, "edge-a", durability="none")
    assert a.flush(WAIT)
    t = tails("-f", "-n", "5", "--json", tmp_path)
    assert json.loads(t.line())["kind"] == "session.opened"
    b = ledgers(tmp_path, "edge-b", durability="none")
    b.record("upload.done", {"from": "b"})
    assert b.flush(WAIT)
    first, second = (json.loads(x) for x in t.take(2))
    assert first["kind"] == "session.opened" and "edge-b" in first["data"]["origin"]
    assert second["data"] == {"from": "b"}


def test_a_partial_line_is_held_until_its_lf_arrives(tmp_path, tails):
    path, b, lines = session_file(tmp_path, 3)
    for args in (["--verify"], []):
        t = tails("-f", "--json", "-n", "10", *args, path)
        assert t.take(len(lines)) == lines
        line = b.line("capture.sealed", b'{"i":3,"note":"held until complete"}', format_ts(1_795_000_010.0))
        with open(path, "ab") as f:
            f.write(line[:50])
            f.flush()
            assert t.nothing_for(0.5), "a partial line was printed"
            f.write(line[50:-1])
            f.flush()
            assert t.nothing_for(0.3), "a line without its LF was printed"
            f.write(b"\n")
        assert t.line() == line
        t.close()
        lines.append(line)


def test_lines_reads_only_the_end_of_a_large_file(tmp_path):
    """16 GiB, almost all of it a hole: reading it from the start would take minutes."""
    path, _, lines = session_file(tmp_path, 40)
    big = tmp_path / "edge-1" / "20261123T210000.000000Z-big.ndjson"
    with open(big, "wb") as f:
        f.truncate(16 * 2**30)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + b"".join(lines[1:]))
    wrapper = (
        "import runpy, sys\n"
        "try:\n"
        "    runpy.run_module('ledger.cli', run_name='__main__')\n"
        "finally:\n"
        "    rchar = [x for x in open('/proc/self/io') if x.startswith('rchar')][0].split()[1]\n"
        "    sys.stderr.write('RCHAR ' + rchar + '\\n')\n"
    )
    if not os.path.exists("/proc/self/io"):
        pytest.skip("needs /proc/self/io to count bytes read")
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", wrapper, "tail", "-n", "5", "--json", str(big)],
        capture_output=True,
        env=_env(),
        cwd=REPO,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stderr
    assert run.stdout == b"".join(lines[-5:])
    rchar = int(run.stderr.split(b"RCHAR ")[1])
    assert rchar < 64 * 2**20, f"read {rchar} bytes of a {big.stat().st_size}-byte file"
    assert elapsed < 20


def test_lines_kind_and_since_pick_the_last_matching_events(tmp_path):
    path, _, lines = session_file(tmp_path, 300, checkpoint_every=50)
    run = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "tail", "-n", "7", "--kind", "upload.*", "--kind", "deletion.*", "--json"]
        + [str(path)],
        capture_output=True,
        env=_env(),
        cwd=REPO,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    want = [x for x in lines if b'"kind":"upload.done"' in x or b'"kind":"deletion.local"' in x][-7:]
    assert run.stdout == b"".join(want)
    since = format_ts(1_795_000_000.0 + 290)
    run = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "tail", "--since", since.replace("Z", "+00:00"), "--json", str(path)],
        capture_output=True,
        env=_env(),
        cwd=REPO,
        timeout=60,
    )
    assert run.stdout == b"".join(lines[290:])  # --since without -n: everything since


# ---- verification ---------------------------------------------------------------------


def _edit_in_place(path: Path, line_no: int) -> None:
    """Change one character of line ``line_no`` (1-based) without changing its length."""
    with open(path, "r+b") as f:
        data = f.read()
        start = 0
        for _ in range(line_no - 1):
            start = data.index(b"\n", start) + 1
        at = data.index(b'"i":', start) + 4
        f.seek(at)
        f.write(b"9" if data[at : at + 1] != b"9" else b"8")


@pytest.mark.parametrize("tamper", ["edit-read-line", "truncate", "forged-append"])
def test_a_break_under_verify_names_the_line_and_exits_1(tmp_path, tails, ledgers, tamper):
    led = ledgers(tmp_path, durability="none")
    for i in range(1, 21):
        led.record("capture.sealed", {"i": i})
    assert led.flush(WAIT)
    t = tails("-f", "--verify", "-n", "100", "--json", tmp_path / "edge-1")
    assert seqs(t.take(21)) == list(range(21))
    path = led.path
    if tamper == "edit-read-line":
        _edit_in_place(path, 6)
        want = b"line 6: chain_mismatch"
    elif tamper == "truncate":
        os.truncate(path, path.stat().st_size - 40)
        want = b"line 21: truncated"
    else:
        with open(path, "ab") as f:
            f.write(b'{"v":1,"seq":21,"ts":"2026-11-23T20:00:00.000000Z","kind":"x","data":{},"chain":"' + b"0" * 64)
            f.write(b'"}\n')
        want = b"line 22: chain_mismatch"
    assert t.wait() == 1
    err = t.stderr.decode()
    assert "VERIFY FAILED" in err and str(path) in err, err
    assert want.decode() in err, err
    assert err.count("\n") <= 3 and "Traceback" not in err


def test_verify_says_from_which_seq_and_whether_signatures_were_checked(tmp_path):
    path, _, _ = session_file(tmp_path, 60, checkpoint_every=20)
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex())
    base = [sys.executable, "-m", "ledger.cli", "tail", "-n", "2", "--verify", str(path)]
    run = subprocess.run(base, capture_output=True, env=_env(), cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert b"from seq 0" in run.stderr and b"seq 0-59" in run.stderr and b"NOT checked" in run.stderr
    run = subprocess.run(base + ["--key-file", str(key_file)], capture_output=True, env=_env(), cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert b"2 checkpoints" in run.stderr and b"HMAC signatures verified" in run.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("ab" * 32)
    run = subprocess.run(base + ["--key-file", str(wrong)], capture_output=True, env=_env(), cwd=REPO, timeout=60)
    assert run.returncode == 1 and b"line 21: bad_signature" in run.stderr, run.stderr


def _signed_session(d: Path, sign) -> Path:
    """A session whose checkpoints (lines 10 and 20) carry one signature, made by ``sign``, and no HMAC."""
    b = SessionBuilder("edge-1", SESSION, [], signers=[sign])
    t0 = 1_795_000_000.0
    out = [b.opened_line(format_ts(t0))]
    for i in range(1, 30):
        ts = format_ts(t0 + i)
        out.append(b.checkpoint_line(ts, now=t0 + i) if i % 10 == 0 else b.line("app.event", b'{"i":%d}' % i, ts))
    d.mkdir(parents=True)
    path = d / f"{SESSION}.ndjson"
    path.write_bytes(b"".join(out))
    return path


def _tail_verify(path: Path, *args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ledger.cli", "tail", "-n", "1", *map(str, args), str(path)]
    return subprocess.run(cmd, capture_output=True, env=_env(), cwd=REPO, timeout=60)


def test_verify_takes_pubkey_like_ledger_verify(tmp_path):
    """A session signed with Ed25519 alone: `tail --verify --pubkey` checks it as `verify --pubkey` does."""
    signer = notes.generate_signer("alpha")
    path = _signed_session(tmp_path / "edge-1", lambda text, now: notes.checkpoint_sig(signer, text))
    assert verify_file(path, Policy(verifiers=(signer.verifier(),), allow_unsealed=True)).ok  # what verify says
    good = _tail_verify(path, "--verify", "--pubkey", signer.verifier_key())
    assert good.returncode == 0, good.stderr
    assert b"seq 0-29 (2 checkpoints)" in good.stderr and b"signatures verified (1 Ed25519 verifier key)" in good.stderr
    assert b"app.event" in good.stdout
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex())
    other = notes.generate_signer("alpha")  # the same name, another key
    for bad in (("--pubkey", other.verifier_key()), ("--key-file", key_file)):
        r = _tail_verify(path, "--verify", *bad)
        assert r.returncode == 1 and b"VERIFY FAILED" in r.stderr and b"line 11: " in r.stderr, (bad, r.stderr)
    assert _tail_verify(path, "--pubkey", signer.verifier_key()).returncode == 2  # like --key-file: needs --verify


def test_verify_takes_fs_seed_like_ledger_verify(tmp_path):
    seed_file = tmp_path / "audit.seed"
    ratchet = fsseal.write_fs_seed(seed_file, t0=1_795_000_000, interval_s=5)
    path = _signed_session(tmp_path / "edge-1", ratchet.sign)
    good = _tail_verify(path, "--verify", "--fs-seed", seed_file)
    assert good.returncode == 0 and b"signatures verified (1 forward-secure seed)" in good.stderr, good.stderr
    other = tmp_path / "other.seed"
    fsseal.write_fs_seed(other, t0=1_795_000_000, interval_s=5)
    bad = _tail_verify(path, "--verify", "--fs-seed", other)
    assert bad.returncode == 1 and b"line 11: " in bad.stderr, bad.stderr
    assert _tail_verify(path, "--verify", "--fs-seed", tmp_path / "missing.seed").returncode == 2  # could not check


def test_the_incremental_verifier_agrees_with_verify_on_every_fixture():
    """Fed in random batches, TailVerifier stops at the line and reason `ledger verify` names."""
    rng = random.Random(7)
    cases = json.loads((FIXTURES / "expected.json").read_text())["cases"]
    checked = 0
    for case in cases:
        path = FIXTURES / case["file"]
        if path.is_dir() or case["reason"] in ("unsealed", "prev_mismatch", "empty"):
            continue
        keys = (bytes.fromhex((FIXTURES / "test.key").read_text().strip()),) if "--key-file" in case["args"] else ()
        report = verify_file(path, Policy(keys=keys, allow_unsealed=True))
        v = TailVerifier(str(path), Policy(keys=keys))
        data = path.read_bytes()
        lines = data[: data.rfind(b"\n")].split(b"\n") if b"\n" in data else []
        err, i = None, 0
        while i < len(lines) and err is None:
            n = rng.randint(1, 5)
            held, err = v.feed(lines[i : i + n])
            i += held if err else n
        if report.first_error is None or report.first_error.line is None:
            assert err is None, (case, err)
        else:
            assert err is not None and err.line == report.first_error.line, (case, err)
            assert report.first_error.reason in str(err), (case, err)
        checked += 1
    assert checked >= 10


def test_a_rotated_session_must_name_the_one_sealed_before_it():
    path = FIXTURES / "multi" / "edge-1" / "20261123T211000.000000Z-fx12.ndjson"
    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    wrong = msgspec.json.decode(lines[0])["data"]["prev"]
    wrong["size"] += 1
    v = TailVerifier(str(path), expected_prev=msgspec.convert(wrong, PrevLink))
    held, err = v.feed(lines)
    assert held == 0 and err is not None and "line 1: prev_mismatch" in str(err)
    ok = TailVerifier(str(path), expected_prev=msgspec.convert(msgspec.json.decode(lines[0])["data"]["prev"], PrevLink))
    assert ok.feed(lines) == (len(lines), None) and ok.sealed


# ---- stopping -------------------------------------------------------------------------------


def test_sigint_exits_130_quietly(tmp_path, tails, ledgers):
    led = ledgers(tmp_path, durability="none")
    assert led.flush(WAIT)
    t = tails("-f", "-n", "1", tmp_path / "edge-1")
    assert b"session.opened" in t.line()
    t.proc.send_signal(signal.SIGINT)
    assert t.wait() == 130  # README: Ctrl-C anywhere is 130 (as coreutils tail -f), never "all holds"
    assert b"Traceback" not in t.stderr and b"error" not in t.stderr


def test_a_closed_pipe_ends_tail_quietly_even_with_nothing_new(tmp_path, ledgers):
    led = ledgers(tmp_path, durability="none")
    for i in range(5):
        led.record("capture.sealed", {"i": i})
    assert led.flush(WAIT)
    cmd = f"{sys.executable} -m ledger.cli tail -f --json {tmp_path / 'edge-1'} | head -n 2"
    run = subprocess.run(["sh", "-c", cmd], capture_output=True, env=_env(), cwd=REPO, timeout=30)
    assert run.returncode == 0
    assert len(run.stdout.splitlines()) == 2 and run.stderr == b"", run.stderr


def test_following_a_session_file_ends_at_its_seal(tmp_path):
    path = FIXTURES / "sealed.ndjson"
    run = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "tail", "-f", "-n", "1", "--json", str(path)],
        capture_output=True,
        env=_env(),
        cwd=REPO,
        timeout=30,
    )
    assert run.returncode == 0 and b"session.sealed" in run.stdout and b"nothing can follow" in run.stderr


# ---- rendering and usage --------------------------------------------------------------


@pytest.mark.parametrize("no_color", [False, True])
def test_colour_on_a_tty_unless_no_color(no_color):
    master, slave = pty.openpty()
    env = _env(**({"NO_COLOR": "1"} if no_color else {}), COLUMNS="200", TERM="xterm-256color")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "tail", "-n", "3", str(FIXTURES / "sealed.ndjson")],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(WAIT) == 0
    os.close(master)
    assert b"session.sealed" in out
    assert (b"\x1b[" in out) is not no_color


def test_usage_and_input_errors_exit_2(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ledger.cli", "tail", *args], capture_output=True, env=_env(), cwd=REPO, timeout=30
        )

    assert run(str(tmp_path / "missing")).returncode == 2
    assert run(str(tmp_path)).returncode == 2  # no sessions and not following
    assert run("--key-file", "x", str(FIXTURES / "sealed.ndjson")).returncode == 2
    assert run("--since", "yesterday", str(FIXTURES / "sealed.ndjson")).returncode == 2
    bad = run("--since", "2026-11-23T20:00:00", str(FIXTURES / "sealed.ndjson"))
    assert bad.returncode == 2 and b"offset" in bad.stderr


# ---- the library ----------------------------------------------------------------------


def test_lines_backward_matches_a_forward_split(tmp_path):
    rng = random.Random(1)
    for trial in range(40):
        lines = [
            bytes(rng.choice(b'ab{}"') for _ in range(rng.randint(0, 40))) + b"\n" for _ in range(rng.randint(0, 30))
        ]
        data = b"".join(lines) + (b"torn" if trial % 2 else b"")
        p = tmp_path / f"f{trial}"
        p.write_bytes(data)
        fd = os.open(p, os.O_RDONLY)
        try:
            end = last_boundary(fd, len(data))
            assert end == len(data) - (4 if trial % 2 else 0)
            got = list(lines_backward(fd, end, block=rng.randint(1, 64)))
        finally:
            os.close(fd)
        assert [line for _, line in got] == lines[::-1]
        assert all(data[off : off + len(line)] == line for off, line in got)


def test_parse_since():
    now = 1_795_000_000.0
    assert parse_since("10m", now) == format_ts(now - 600)
    assert parse_since("2h", now) == format_ts(now - 7200)
    assert parse_since("1.5d", now) == format_ts(now - 1.5 * 86400)
    assert parse_since("2026-11-23T21:00:00+01:00") == "2026-11-23T20:00:00.000000Z"
    assert parse_since("2026-11-23T20:00:00.5Z") == "2026-11-23T20:00:00.500000Z"


def test_follow_in_process_yields_the_backlog_then_stops_without_follow():
    items = list(follow(FIXTURES / "multi" / "edge-1", TailOptions(lines=4, kinds=("*.sealed",))))
    shown = [(i.kind, i.seq) if isinstance(i, TailEvent) else type(i).__name__ for i in items]
    assert shown == [
        "SessionChange",
        ("session.sealed", 15),  # the backlog reaches into the session before the newest
        "SessionChange",
        ("capture.sealed", 1),
        ("capture.sealed", 9),
        ("session.sealed", 12),
    ]
    assert items[2].previous == items[0].session
