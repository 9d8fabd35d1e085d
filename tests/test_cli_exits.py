"""Exit codes and one-line errors of the real `ledger` command (README "Exit codes").

Every test runs the command in a subprocess as a user would: pipes through
``bash -o pipefail``, real FIFOs, a real SIGINT. 0 means everything checked holds,
1 an evidence problem, 2 could not check; a closed pipe is never 1; Ctrl-C is 130.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
SEALED = FIXTURES / "sealed.ndjson"
KEY_FILE = FIXTURES / "test.key"


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.pop("NO_COLOR", None)
    return {**env, "PYTHONPATH": str(REPO), **extra}


LEDGER = f"{sys.executable} -m ledger.entry"


def ledger(*args: str, stdin=None, input: bytes | None = None, env: dict | None = None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ledger.entry", *map(str, args)],
        capture_output=True,
        stdin=stdin,
        input=input,
        env=env or _env(),
        cwd=cwd or REPO,
        timeout=120,
    )


def pipefail(cmd: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, env=_env(**env), cwd=REPO, timeout=120
    )


def one_error_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ledger: error: "), text
    return lines[0]


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """400 namespaces of one intact sealed session: far more report than a pipe buffer holds."""
    root = tmp_path_factory.mktemp("many")
    for i in range(400):
        (root / f"ns{i:03d}").mkdir()
        shutil.copyfile(SEALED, root / f"ns{i:03d}" / SEALED.name)
    return root


# ---- a closed pipe is never the tamper code ----------------------------------------------------


def test_verify_dir_into_head_exits_0_on_intact_evidence(many):
    run = pipefail(f"{LEDGER} verify {many} 2>&1 | head -1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(b"PASS ")


def test_verify_into_a_reader_that_has_gone_exits_0(many):
    run = pipefail(f"{LEDGER} verify {many} 2>&1 | (exec 0<&-; sleep 1)")
    assert run.returncode == 0, run.stderr
    run = pipefail(f"{LEDGER} verify --json {many} | (exec 0<&-; sleep 1)")
    assert run.returncode == 0 and run.stderr == b"", run.stderr


def test_a_closed_pipe_does_not_hide_a_tamper_verdict(tmp_path, many):
    shutil.copyfile(FIXTURES / "tamper" / "byte-flip.ndjson", tmp_path / "t.ndjson")
    run = pipefail(f"{LEDGER} verify {tmp_path} 2>&1 | (exec 0<&-; sleep 1)")
    assert run.returncode == 1, run.stderr
    # --json larger than any pipe buffer, the reader gone before it is written
    run = pipefail(f"{LEDGER} verify --json {many} {tmp_path} | (exec 0<&-; sleep 1)")
    assert run.returncode == 1, run.stderr


def test_tail_into_head_exits_0():
    run = pipefail(f"{LEDGER} tail -n 100 {SEALED} | head -1")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 1
    run = pipefail(f"{LEDGER} tail -n 100 {SEALED} | (exec 0<&-; sleep 1)")
    assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr


# ---- errors: one line, exit 2, and --json still one object ------------------------------------


def test_json_on_exit_2_prints_one_object_with_the_error(tmp_path):
    run = ledger("verify", "--json", tmp_path / "missing.ndjson")
    assert run.returncode == 2
    out = json.loads(run.stdout)
    assert out["ok"] is False and "missing.ndjson" in out["error"] and out["exit_code"] == 2
    one_error_line(run.stderr)


@pytest.mark.parametrize(
    "args, says",
    [
        (["verify", "--bogus", str(SEALED)], "No such option: --bogus"),
        (["prove", "inclusion"], "Missing argument"),
        (["verify", "--jobs", "x", str(SEALED)], "--jobs"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, says):
    run = ledger(*args)
    assert run.returncode == 2, run.stderr
    assert says in one_error_line(run.stderr)
    assert run.stdout == b""


def test_usage_error_with_json_prints_one_object():
    run = ledger("verify", "--json", "--bogus", SEALED)
    assert run.returncode == 2
    assert json.loads(run.stdout)["ok"] is False
    one_error_line(run.stderr)


# ---- Ctrl-C: 130, no traceback ----------------------------------------------------------------


def interrupt(args: list[str], after: float, **popen) -> tuple[int, bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.entry", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
        cwd=REPO,
        **popen,
    )
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.parametrize("after", [0.6, 1.5, 2.5])
def test_sigint_during_the_demo_exits_130_without_a_traceback(tmp_path, after):
    code, err = interrupt(["demo", tmp_path / "demo", "--seconds", "3"], after)
    assert code == 130, err.decode()
    assert b"Traceback" not in err and b"Error" not in err, err.decode()


def test_sigint_while_verify_reads_stdin_exits_130(tmp_path):
    r, w = os.pipe()  # a writer that never writes: verify - waits on it
    try:
        code, err = interrupt(["verify", "-"], 1.0, stdin=r)
    finally:
        os.close(r)
        os.close(w)
    assert code == 130, err.decode()
    assert b"Traceback" not in err, err.decode()


def test_sigint_during_tail_follow_exits_130(tmp_path):
    shutil.copyfile(FIXTURES / "unsealed.ndjson", tmp_path / "u.ndjson")
    code, err = interrupt(["tail", "-f", tmp_path / "u.ndjson"], 1.5)
    assert code == 130, err.decode()
    assert b"Traceback" not in err, err.decode()


# ---- never hang: FIFOs, sockets, devices ------------------------------------------------------


def test_a_fifo_in_a_directory_is_skipped_with_a_note_and_the_rest_verified(tmp_path):
    shutil.copyfile(SEALED, tmp_path / SEALED.name)
    os.mkfifo(tmp_path / "x.ndjson")
    run = ledger("verify", tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"skipped {tmp_path / 'x.ndjson'}: a FIFO".encode() in run.stderr
    assert b"1/1 files intact" in run.stderr
    run = ledger("verify", "--json", tmp_path)
    out = json.loads(run.stdout)
    assert out["ok"] and len(out["files"]) == 1 and "a FIFO" in out["notes"][0]


@pytest.mark.parametrize("make", ["fifo", "socket", "device"])
def test_a_fifo_socket_or_device_given_as_a_path_is_refused(tmp_path, make):
    if make == "fifo":
        target = tmp_path / "x.ndjson"
        os.mkfifo(target)
    elif make == "socket":
        import socket

        target = tmp_path / "s.ndjson"
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
    else:
        target = Path("/dev/zero")  # would never end
    run = ledger("verify", SEALED, target)
    assert run.returncode == 2
    assert "not a session file" in one_error_line(run.stderr)


# ---- archived files verify as they are ------------------------------------------------------


def gz(src: Path, dest: Path) -> Path:
    import gzip

    dest.write_bytes(gzip.compress(src.read_bytes()))
    return dest


def test_an_intact_gzip_session_verifies_decompressed(tmp_path):
    archived = gz(SEALED, tmp_path / "s.ndjson.gz")
    run = ledger("verify", "--key-file", KEY_FILE, archived)
    assert run.returncode == 0, run.stderr
    assert b"verified decompressed" in run.stderr
    (tmp_path / "d").mkdir()  # also inside a directory, named .ndjson
    gz(SEALED, tmp_path / "d" / "s.ndjson")
    assert ledger("verify", tmp_path / "d").returncode == 0


def test_a_tampered_or_damaged_gzip_session_fails(tmp_path):
    tampered = gz(FIXTURES / "tamper" / "byte-flip.ndjson", tmp_path / "t.ndjson.gz")
    run = ledger("verify", "--json", tampered)
    assert run.returncode == 1
    err = json.loads(run.stdout)["files"][0]["first_error"]
    assert (err["line"], err["reason"]) == (5, "chain_mismatch")
    cut = tmp_path / "cut.ndjson.gz"
    cut.write_bytes(gz(SEALED, tmp_path / "whole.gz").read_bytes()[:-200])
    run = ledger("verify", "--json", cut)
    assert run.returncode == 1
    assert json.loads(run.stdout)["files"][0]["first_error"]["reason"] == "bad_gzip"


@pytest.mark.parametrize("compressed", [False, True])
def test_dash_reads_standard_input(tmp_path, compressed):
    data = gz(SEALED, tmp_path / "s.gz").read_bytes() if compressed else SEALED.read_bytes()
    run = ledger("verify", "--key-file", KEY_FILE, "-", input=data)
    assert run.returncode == 0, run.stderr
    tampered = (FIXTURES / "tamper" / "byte-flip.ndjson").read_bytes()
    assert ledger("verify", "-", input=tampered).returncode == 1


def test_tail_refuses_a_gzip_with_one_line(tmp_path):
    run = ledger("tail", gz(SEALED, tmp_path / "s.ndjson.gz"))
    assert run.returncode == 2
    assert "gzip-compressed" in one_error_line(run.stderr)


# ---- summaries say what happened --------------------------------------------------------------


def test_the_closing_line_states_per_file_what_held_and_what_failed(tmp_path):
    bad = FIXTURES / "tamper" / "resigned-wrong-key.ndjson"
    run = ledger("verify", "--key-file", KEY_FILE, SEALED, bad)
    assert run.returncode == 1
    last = run.stderr.decode().splitlines()[-1]
    assert last.startswith("FAIL: 1/2 files intact"), last
    assert f"{SEALED.name}: chain, 4 checkpoint roots, sealed; signatures verified" in last, last
    assert f"{bad.name}: FAILED at line 11 (bad_signature)" in last, last
    assert not last.rstrip().endswith("signatures verified"), last
    run = ledger("verify", FIXTURES / "tamper" / "byte-flip.ndjson")
    last = run.stderr.decode().splitlines()[-1]
    assert "FAILED at line 5 (chain_mismatch)" in last and "signatures NOT checked" in last, last
