"""Tests for ledger.verify and the `ledger verify` command (SPEC.md section 5).

Real files in tmp_path throughout. Layers:

1. The committed fixtures (fixtures/expected.json, made by tools/make_fixtures.py) and
   the independent conformance samples (../shared/conformance/v1) through the CLI.
2. Exhaustive tamper of a small sealed session through the library: every byte
   changed, every line deleted / duplicated / swapped / inserted, every truncation,
   re-hashed and re-signed edits at every position. A handful through the CLI.
3. Bad input and usage errors: empty, garbage, invalid UTF-8, a 50 MB line (with a
   peak-memory bound), missing paths, bad key files, the key from the environment.
4. Torn tails and files still being written; the parallel path against the serial
   one; directories and prev links; stderr hygiene; keygen.

Expected verdicts are computed here from the format rules and the known layout of
each session, never by asking the verifier first.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ledger import format as fmt
from ledger import verify as verify_mod
from ledger.format import format_ts
from ledger.keys import key_id, load_key_file
from ledger.merkle import Accumulator, leaf_hash
from ledger.session import SessionBuilder
from ledger.verify import FileReport, Policy, verify_file, verify_path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
# The independent samples, vendored so the suite runs in a bare clone; checked against
# ../shared/conformance/v1 whenever that folder is beside the clone.
CONFORMANCE_V1 = Path(__file__).resolve().parent / "vectors" / "conformance-v1"
SHARED_V1 = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "v1"

KEY = bytes(range(32))
WRONG_KEY = bytes(range(0x40, 0x60))
NS = "edge-1"
T0 = 1_795_464_000  # 2026-11-23T20:00:00Z
SID = "20261123T200000.000000Z-t01"
KEYED = Policy(keys=(KEY,), jobs=1)
ALLOW = Policy(keys=(KEY,), allow_unsealed=True, jobs=1)
REASONS = {
    "not_utf8",
    "line_too_long",
    "malformed",
    "bad_version",
    "seq_mismatch",
    "chain_mismatch",
    "bad_opened",
    "bad_checkpoint",
    "size_mismatch",
    "root_mismatch",
    "bad_signature",
    "after_seal",
    "prev_mismatch",
    "empty",
    "unsealed",
    "missing_session",
}


# ---- helpers ------------------------------------------------------------------------


def cli(*args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None):
    """Run `python -m ledger.cli ARGS...` with a clean key environment."""
    full_env = {k: v for k, v in os.environ.items() if k != "LEDGER_HMAC_KEY_FILE"}
    full_env.update({"NO_COLOR": "1", "COLUMNS": "50"})  # narrow: a wrapped line would show
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=120,
    )


def verify_json(*args: str | os.PathLike[str], **kw) -> tuple[subprocess.CompletedProcess, dict]:
    """`ledger verify --json ARGS...`: the process and its stdout, which must parse."""
    p = cli("verify", "--json", *args, **kw)
    assert "Traceback" not in p.stderr, p.stderr
    try:
        report = json.loads(p.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"--json stdout does not parse (exit {p.returncode}): {p.stdout!r} {p.stderr!r}")
    assert report["ok"] is (p.returncode == 0)
    return p, report


def assert_one_error_line(p: subprocess.CompletedProcess) -> None:
    """A usage or I/O failure: exit 2, exactly one `ledger: error:` line on stderr."""
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("ledger: error: ")
    if "--json" in p.args:  # README: --json prints one object that parses, even on failure
        out = json.loads(p.stdout)
        assert out["ok"] is False and out["exit_code"] == 2 and out["error"] == lines[0][len("ledger: error: ") :]
    else:
        assert p.stdout == ""


def ts(seq: int, offset_s: int = 0) -> str:
    return format_ts(T0 + offset_s + seq + seq * 1234 / 1e6)


NOTES = ("plain", "ü✓ ß", 'q " b \\ t\t', "\u2028 sep", "")


def data_of(seq: int, note: str | None = None) -> bytes:
    obj = {"i": seq, "cn": f"client-{seq % 3}", "note": NOTES[seq % len(NOTES)] if note is None else note}
    if seq % 4 == 3:
        obj["nest"] = {"a": [1, 2.5, None, True], "b": {}}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def build(
    size: int = 11,
    every: int = 4,
    *,
    keys: tuple[bytes, ...] = (KEY,),
    session: str = SID,
    seal: bool = True,
    prev: fmt.PrevLink | None = None,
    offset_s: int = 0,
    edit_seq: int | None = None,
    resign_from: int | None = None,
    ns: str = NS,
) -> tuple[SessionBuilder, list[bytes]]:
    """Seq 0 opened; a checkpoint at each multiple of ``every``; events between; seal at ``size``.

    Default: 12 lines, checkpoints at seq 4 and 8 (lines 5, 9), the seal at seq 11 (line 12).
    ``edit_seq`` changes that event's data; from ``resign_from`` on, WRONG_KEY signs.
    """
    b = SessionBuilder(ns, session, list(keys), prev=prev)
    lines = [b.opened_line(ts(0, offset_s))]
    for seq in range(1, size):
        if seq == resign_from:
            b.keys = [WRONG_KEY]
        if seq % every == 0:
            lines.append(b.checkpoint_line(ts(seq, offset_s)))
        else:
            note = "EDITED" if seq == edit_seq else None
            lines.append(b.line("conn.anomaly", data_of(seq, note), ts(seq, offset_s)))
    if seal:
        lines.append(b.seal_line(ts(size, offset_s), "closed", 0))
    return b, lines


SMALL_B, SMALL = build()
SMALL_CHECKPOINT_SEQS = [4, 8, 11]  # the seal is the last commitment


def forged(prev_line: bytes | None, seq: int) -> bytes:
    """A well-formed line anyone can make without the key, chained on ``prev_line``."""
    event = fmt.encode_event(seq, ts(seq), "conn.anomaly", b'{"forged":true}')
    prev = bytes.fromhex(fmt.chain_of_line(prev_line)) if prev_line else fmt.ZERO_CHAIN
    return fmt.make_line(event, fmt.next_chain(prev, leaf_hash(event)))


def rechain(lines: list[bytes]) -> list[bytes]:
    """Renumber seq and recompute every chain value (no key needed)."""
    out, chain = [], fmt.ZERO_CHAIN
    for i, line in enumerate(lines):
        event = fmt.event_of_line(line)
        head, rest = event.split(b',"ts":', 1)
        event = b'{"v":1,"seq":%d,"ts":%s' % (i, rest)
        assert head.startswith(b'{"v":1,"seq":')
        chain = fmt.next_chain(chain, leaf_hash(event))
        out.append(fmt.make_line(event, chain))
    return out


def write(path: Path, lines: list[bytes] | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lines if isinstance(lines, bytes) else b"".join(lines))
    return path


def check(path: Path, policy: Policy = KEYED) -> FileReport:
    return verify_file(path, policy)


def err(report: FileReport) -> tuple[int | None, str | None]:
    e = report.first_error
    return (e.line, e.reason) if e else (None, None)


def first_commit_at_or_after(seq: int, commits: list[int] = SMALL_CHECKPOINT_SEQS) -> int:
    """1-based line of the first checkpoint or seal at or after ``seq``."""
    return next(c for c in commits if c >= seq) + 1


def test_small_session_layout():
    """The layout every expectation below is computed from."""
    kinds = [json.loads(line)["kind"] for line in SMALL]
    assert len(SMALL) == 12
    assert [i for i, k in enumerate(kinds) if k != "conn.anomaly"] == [0, *SMALL_CHECKPOINT_SEQS]
    assert kinds[0] == fmt.KIND_OPENED and kinds[4] == kinds[8] == fmt.KIND_CHECKPOINT
    assert kinds[11] == fmt.KIND_SEALED
    assert all(json.loads(line)["seq"] == i for i, line in enumerate(SMALL))


# ---- 1a. the committed fixtures -------------------------------------------------------


def _fixture_cases() -> list:
    exp = FIXTURES / "expected.json"
    if not exp.is_file():
        return [pytest.param(None, id="missing")]
    cases = json.loads(exp.read_text(encoding="utf-8"))["cases"]
    return [
        pytest.param(c, id=f"{c['file']}{''.join(' ' + a for a in c['args'] if a.startswith('--'))}") for c in cases
    ]


@pytest.mark.parametrize("case", _fixture_cases())
def test_fixture_case_through_cli(case):
    assert case is not None, "fixtures/expected.json missing: run python tools/make_fixtures.py"
    p, report = verify_json(*case["args"], case["file"], cwd=FIXTURES)
    assert p.returncode == case["exit"], (case["why"], p.stdout)
    failing = [f for f in report["files"] if f["first_error"] is not None]
    if case["exit"] == 0:
        assert not failing
    else:
        assert failing, case["why"]
        e = failing[0]["first_error"]
        assert (e["line"], e["reason"]) == (case["first_error_line"], case["reason"]), case["why"]
    f0 = report["files"][0]
    for field in ("events", "torn_tail_bytes", "signed_size", "signatures"):
        if field in case:
            assert f0[field] == case[field], field
    if "--key-file" not in case["args"]:
        assert all(f["signatures"] == "unchecked" for f in report["files"])


def test_fixture_cases_cover_every_fixture():
    exp = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    named = {c["file"] for c in exp["cases"]}
    for c in exp["cases"]:
        assert (FIXTURES / c["file"]).exists(), c["file"]
        assert c["why"] and c["exit"] in (0, 1)
        assert (c["reason"] is None) == (c["exit"] == 0)
    tamper = {f"tamper/{p.name}" for p in (FIXTURES / "tamper").glob("*.ndjson")}
    assert tamper and tamper <= named, tamper - named
    assert {"sealed.ndjson", "unsealed.ndjson", "torn-tail.ndjson", "multi"} <= named
    assert load_key_file(FIXTURES / "test.key") == KEY


def test_fixture_tamper_set_human_report():
    """The whole tamper set in one run without --json: one FAIL line per file, naming the line."""
    exp = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    want = {
        c["file"]: c
        for c in exp["cases"]
        if c["file"].startswith("tamper/") and c["args"] == ["--key-file", "test.key"]
    }
    p = cli("verify", "--key-file", "test.key", *sorted(want), cwd=FIXTURES)
    assert p.returncode == 1 and p.stdout == "" and "Traceback" not in p.stderr
    fails = {
        line.split(": ", 1)[0].removeprefix("FAIL "): line for line in p.stderr.splitlines() if line.startswith("FAIL ")
    }
    assert sorted(fails) == sorted(want)
    for file, c in want.items():
        where = "file" if c["first_error_line"] is None else f"line {c['first_error_line']}"
        assert f"{file}: {where}: {c['reason']}: " in fails[file]


def test_fixture_generator_is_deterministic_and_committed(tmp_path):
    out = tmp_path / "fx"
    for _ in range(2):  # twice into the same folder: nothing changes
        p = subprocess.run(
            [sys.executable, str(REPO / "tools" / "make_fixtures.py"), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        made = {q.relative_to(out): q.read_bytes() for q in out.rglob("*") if q.is_file()}
        committed = {q.relative_to(FIXTURES): q.read_bytes() for q in FIXTURES.rglob("*") if q.is_file()}
        assert made.keys() == committed.keys()
        stale = sorted(str(k) for k in made if made[k] != committed[k])
        assert not stale, f"fixtures/ out of date, rerun tools/make_fixtures.py: {stale}"


# ---- 1b. the independent conformance samples -----------------------------------------


def _conformance_cases() -> list:
    data = json.loads((CONFORMANCE_V1 / "expected.json").read_text(encoding="utf-8"))
    return [pytest.param(data["key_file"], c, id=f"{c['file']}{' '.join(c['args'])}") for c in data["cases"]]


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.skipif(not SHARED_V1.is_dir(), reason=f"{SHARED_V1} not present: the vendored copy is used alone")
def test_conformance_copy_matches_shared():
    """The vendored samples (tests/vectors/conformance-v1) must not drift from ../shared."""
    assert _tree_bytes(CONFORMANCE_V1) == _tree_bytes(SHARED_V1)


@pytest.mark.parametrize(("key_file", "case"), _conformance_cases())
def test_conformance_case(key_file, case):
    v1 = CONFORMANCE_V1
    p, report = verify_json("--key-file", v1 / key_file, *case["args"], v1 / case["file"])
    assert p.returncode == case["exit"], (case["why"], p.stdout)
    failing = [f for f in report["files"] if f["first_error"] is not None]
    if case["exit"] == 0:
        assert not failing
    else:
        assert failing[0]["first_error"]["line"] == case["first_error_line"], case["why"]


# ---- 2a. every byte ------------------------------------------------------------------


def _line_index_of_each_byte(lines: list[bytes]) -> list[int]:
    out = []
    for i, line in enumerate(lines):
        out += [i] * len(line)
    return out


PRINTABLE = b'x"0}\\ a{:,'


def _variants(offset: int, byte: int) -> list[int]:
    printable = PRINTABLE[offset % len(PRINTABLE)]
    if printable == byte:
        printable = PRINTABLE[(offset + 1) % len(PRINTABLE)]
    return [byte ^ 0x01, printable, byte ^ 0x80]


def expected_for_byte_change(lines: list[bytes], offset: int) -> tuple[int | None, str | None]:
    """Where a one-byte change at ``offset`` must be reported.

    Every byte of a line is covered: the header and data by the leaf hash (so the
    stored chain no longer matches) or by the shape check, the trailer by its exact
    form and the chain value. A changed LF merges the line with the next one; the
    merged line starts where the damaged line did, so the number is the same. The
    final LF is different: without it the seal is a torn tail, the file has no seal
    and fails as ``unsealed`` with no line.
    """
    total = sum(map(len, lines))
    if offset == total - 1:
        return None, "unsealed"
    return _line_index_of_each_byte(lines)[offset] + 1, None


def test_every_single_byte_change_is_reported_on_its_line(tmp_path):
    data = b"".join(SMALL)
    path = tmp_path / "s.ndjson"
    assert check(write(path, data)).ok
    tried = 0
    for offset, byte in enumerate(data):
        want_line, want_reason = expected_for_byte_change(SMALL, offset)
        for new in _variants(offset, byte):
            path.write_bytes(data[:offset] + bytes([new]) + data[offset + 1 :])
            r = check(path)
            tried += 1
            where = f"offset {offset} ({byte:#04x} -> {new:#04x}) in line {want_line}"
            assert not r.ok, where
            assert r.first_error.line == want_line, (where, r.first_error)
            assert r.first_error.reason in REASONS, where
            if want_reason:
                assert r.first_error.reason == want_reason, where
            if want_line is not None:
                assert r.first_error.seq == want_line - 1, where
                assert r.events == want_line - 1, where  # lines before the bad one held
    assert tried == 3 * len(data)


def test_flipped_final_lf_passes_only_as_a_torn_tail(tmp_path):
    data = b"".join(SMALL)
    path = write(tmp_path / "s.ndjson", data[:-1] + b"\x0b")
    r = check(path, ALLOW)
    assert r.ok and not r.sealed
    assert r.events == len(SMALL) - 1
    assert r.torn_tail_bytes == len(SMALL[-1])


def test_byte_changes_through_cli(tmp_path):
    data = b"".join(SMALL)
    picks = {
        "opened": SMALL[0].index(b"origin"),
        "checkpoint-sig": sum(map(len, SMALL[:4])) + SMALL[4].index(b'"sig":"') + 8,
        "seal-chain": len(data) - 10,
        "mid-lf": sum(map(len, SMALL[:6])) - 1,
        "seq-digit": sum(map(len, SMALL[:10])) + SMALL[10].index(b'"seq":') + 6,
    }
    paths, want = [], []
    for name, off in picks.items():
        paths.append(write(tmp_path / f"{name}.ndjson", data[:off] + bytes([data[off] ^ 1]) + data[off + 1 :]))
        want.append(expected_for_byte_change(SMALL, off)[0])
    p, report = verify_json("--key-file", write(tmp_path / "k", KEY.hex().encode() + b"\n"), *paths)
    assert p.returncode == 1
    assert [f["first_error"]["line"] for f in report["files"]] == want == [1, 5, 12, 6, 11]


# ---- 2b. whole lines -----------------------------------------------------------------

N = len(SMALL)


@pytest.mark.parametrize("k", range(N))
def test_deleted_line(tmp_path, k):
    r = check(write(tmp_path / "s.ndjson", SMALL[:k] + SMALL[k + 1 :]))
    if k == N - 1:  # the seal gone: a valid prefix, only the missing seal shows
        assert err(r) == (None, "unsealed")
    else:  # line k+1 now holds seq k+1
        assert err(r) == (k + 1, "seq_mismatch")
        assert r.first_error.seq == k


@pytest.mark.parametrize("k", range(N))
def test_duplicated_line(tmp_path, k):
    r = check(write(tmp_path / "s.ndjson", SMALL[: k + 1] + [SMALL[k]] + SMALL[k + 1 :]))
    # the copy is line k+2; after the seal anything is after_seal
    assert err(r) == (k + 2, "after_seal" if k == N - 1 else "seq_mismatch")


@pytest.mark.parametrize("k", range(N - 1))
def test_swapped_lines(tmp_path, k):
    t = list(SMALL)
    t[k], t[k + 1] = t[k + 1], t[k]
    assert err(check(write(tmp_path / "s.ndjson", t))) == (k + 1, "seq_mismatch")


@pytest.mark.parametrize("k", range(N + 1))
def test_inserted_forged_line(tmp_path, k):
    """A well-chained forged line with the right seq at position k: the next genuine line fails."""
    t = SMALL[:k] + [forged(SMALL[k - 1] if k else None, k)] + SMALL[k:]
    r = check(write(tmp_path / "s.ndjson", t))
    if k == 0:
        assert err(r) == (1, "bad_opened")  # line 0 must be session.opened
    elif k == N:
        assert err(r) == (N + 1, "after_seal")
    else:
        assert err(r) == (k + 2, "seq_mismatch")


@pytest.mark.parametrize("k", range(1, N + 1))
def test_inserted_line_rehashed_without_key(tmp_path, k):
    """Insert, renumber and recompute every chain: the next commitment's size is wrong."""
    t = rechain(SMALL[:k] + [forged(None, 0)] + SMALL[k:])
    r = check(write(tmp_path / "s.ndjson", t), Policy(jobs=1))
    if k == N:
        assert err(r) == (N + 1, "after_seal")
    else:
        # the checkpoint that was at seq c now sits at seq c+1 (line c+2) but says size c
        assert err(r) == (first_commit_at_or_after(k) + 1, "size_mismatch")


@pytest.mark.parametrize("k", range(1, N - 1))
def test_deleted_line_rehashed_without_key(tmp_path, k):
    t = SMALL[:k] + SMALL[k + 1 :]
    r = check(write(tmp_path / "s.ndjson", rechain(t)), Policy(jobs=1))
    # the next commitment after the gap moves from seq c to seq c-1 (line c) but says size c
    # (a deleted checkpoint is not noticed itself: the one after it is)
    nxt = next(c for c in SMALL_CHECKPOINT_SEQS if c > k)
    assert err(r) == (nxt, "size_mismatch")


@pytest.mark.parametrize("cut", range(N))
def test_truncated_at_every_line_boundary(tmp_path, cut):
    path = write(tmp_path / "s.ndjson", SMALL[:cut])
    r = check(path)
    assert err(r) == ((None, "empty") if cut == 0 else (None, "unsealed"))
    r = check(path, ALLOW)
    if cut == 0:
        assert err(r) == (None, "empty")
        return
    assert r.ok and not r.sealed
    assert r.events == cut
    signed = [c for c in SMALL_CHECKPOINT_SEQS if c < cut]
    assert r.signed_size == (signed[-1] if signed else 0)
    assert r.checkpoints == len(signed)
    assert r.chain == fmt.chain_of_line(SMALL[cut - 1])


def test_line_after_seal(tmp_path):
    for extra in (forged(SMALL[-1], N), SMALL[-1], b"{}\n", b"\n"):
        r = check(write(tmp_path / "s.ndjson", [*SMALL, extra]), ALLOW)
        assert err(r) == (N + 1, "after_seal"), extra


def test_partial_line_after_seal(tmp_path):
    r = check(write(tmp_path / "s.ndjson", [*SMALL, b'{"v":1,"seq":12']), ALLOW)
    assert err(r) == (N + 1, "after_seal")


@pytest.mark.parametrize("edit", [s for s in range(1, 11) if s not in SMALL_CHECKPOINT_SEQS])
def test_rehashed_edit_resigned_with_wrong_key(tmp_path, edit):
    """Genuine prefix kept, the rest rebuilt from the edit on and signed with another key."""
    _, t = build(edit_seq=edit, resign_from=edit)
    assert t[:edit] == SMALL[:edit] and t[edit] != SMALL[edit]
    path = write(tmp_path / "s.ndjson", t)
    assert err(check(path)) == (first_commit_at_or_after(edit), "bad_signature")
    assert check(path, Policy(jobs=1)).ok  # no key: nothing can tell


@pytest.mark.parametrize("edit", [s for s in range(1, 11) if s not in SMALL_CHECKPOINT_SEQS])
def test_rehashed_edit_without_key(tmp_path, edit):
    t = list(SMALL)
    t[edit] = t[edit].replace(b'"cn":"client-', b'"cn":"mallory-')
    assert t[edit] != SMALL[edit]
    r = check(write(tmp_path / "s.ndjson", rechain(t)), Policy(jobs=1))
    assert err(r) == (first_commit_at_or_after(edit), "root_mismatch")


def test_whole_session_resigned_with_wrong_key(tmp_path):
    _, t = build(keys=(WRONG_KEY,), edit_seq=6)
    path = write(tmp_path / "s.ndjson", t)
    r = check(path)
    assert err(r) == (5, "bad_signature")  # the first checkpoint, before the edit
    assert key_id(WRONG_KEY) in r.first_error.detail
    assert check(path, Policy(keys=(WRONG_KEY,), jobs=1)).ok
    assert check(path, Policy(keys=(KEY, WRONG_KEY), jobs=1)).ok  # a trusted key signed each


def test_wrong_key_given_to_verify(tmp_path):
    r = check(write(tmp_path / "s.ndjson", SMALL), Policy(keys=(WRONG_KEY,), jobs=1))
    assert err(r) == (5, "bad_signature")
    assert r.signatures == "verified" and not r.ok


def test_no_key_passes_and_says_unchecked(tmp_path):
    r = check(write(tmp_path / "s.ndjson", SMALL), Policy(jobs=1))
    assert r.ok and r.sealed and r.signatures == "unchecked"
    assert r.signers == []
    assert (r.events, r.checkpoints, r.signed_size) == (N, 3, 11)


def test_sealed_report_fields(tmp_path):
    r = check(write(tmp_path / "s.ndjson", SMALL))
    assert r.ok and r.sealed and r.seal_reason == "closed"
    assert r.signatures == "verified" and r.signers == [key_id(KEY)]
    assert (r.events, r.checkpoints, r.signed_size) == (N, 3, 11)
    assert r.root == SMALL_B.tree.root().hex()
    assert r.chain == SMALL_B.chain.hex() == fmt.chain_of_line(SMALL[-1])
    assert r.session == SID and r.origin == f"ledger/{NS}/{SID}"
    assert r.bytes == sum(map(len, SMALL))


def test_every_signature_by_a_trusted_key_must_verify(tmp_path):
    """Untrusted signers are ignored; a bad signature by a trusted key fails (SPEC 5, step 6)."""
    b = SessionBuilder(NS, SID, [WRONG_KEY, KEY])
    t = [b.opened_line(ts(0)), b.line("k", b"{}", ts(1)), b.line("k", b"{}", ts(2)), b.seal_line(ts(3), "closed", 0)]
    path = write(tmp_path / "s.ndjson", t)
    r = check(path)
    assert r.ok and r.signers == [key_id(KEY)]
    assert check(path, Policy(keys=(KEY, WRONG_KEY), jobs=1)).signers == [key_id(WRONG_KEY), key_id(KEY)]

    def corrupt(which: int) -> list[bytes]:
        """One signature of the seal changed, the seal's chain value recomputed (no key needed)."""
        event = fmt.event_of_line(t[3])
        sig = json.loads(event)["data"]["sigs"][which]["sig"]
        forged_sig = ("A" if sig[0] != "A" else "B") + sig[1:]
        return rechain([*t[:3], fmt.make_line(event.replace(sig.encode(), forged_sig.encode()), bytes(32))])

    write(path, corrupt(1))  # KEY's signature broken: no good trusted signature left
    assert err(check(path)) == (4, "bad_signature")
    write(path, corrupt(0))  # WRONG_KEY's broken: fine unless WRONG_KEY is trusted too
    assert check(path).ok
    assert err(check(path, Policy(keys=(KEY, WRONG_KEY), jobs=1))) == (4, "bad_signature")


# ---- 3. bad input ------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = write(tmp_path / "e.ndjson", b"")
    assert err(check(path)) == (None, "empty")
    assert err(check(path, ALLOW)) == (None, "empty")
    p, report = verify_json(path)
    assert p.returncode == 1
    assert report["files"][0]["first_error"]["reason"] == "empty"
    assert report["files"][0]["first_error"]["line"] is None


def test_binary_garbage(tmp_path):
    garbage = random.Random(6962).randbytes(8192)
    path = write(tmp_path / "g.ndjson", b"\x89PNG\r\n" + garbage)
    r = check(path)
    assert err(r)[0] == 1 and r.first_error.reason in {"not_utf8", "malformed"}
    p, report = verify_json(path)
    assert p.returncode == 1 and report["files"][0]["first_error"]["line"] == 1


def test_garbage_without_any_lf(tmp_path):
    path = write(tmp_path / "g.ndjson", bytes(b for b in random.Random(1).randbytes(4096) if b != 10))
    r = check(path)
    assert not r.ok and r.first_error.line is None and r.events == 0
    # SPEC 5 calls a file with no complete line "empty"; by default the verifier says
    # "unsealed" first. Either way nothing verified and it fails.
    assert r.first_error.reason in {"empty", "unsealed"}
    assert err(check(path, ALLOW)) == (None, "empty")


@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf4\x90\x80\x80"],
    ids=["ff", "bad-continuation", "surrogate", "overlong", "truncated", "above-10ffff"],
)
def test_invalid_utf8_in_a_data_string_with_a_valid_chain(tmp_path, bad):
    b = SessionBuilder(NS, SID, [KEY])
    t = [b.opened_line(ts(0)), b.line("k", b'{"a":1}', ts(1)), b.line("k", b'{"note":"x' + bad + b'y"}', ts(2))]
    t.append(b.seal_line(ts(3), "closed", 0))
    r = check(write(tmp_path / "u.ndjson", t))
    assert err(r) == (3, "not_utf8")
    assert r.first_error.seq == 2


@pytest.mark.parametrize("where", [b"client-", b"conn.anomaly"])
def test_invalid_utf8_edited_in_place(tmp_path, where):
    t = list(SMALL)
    t[6] = t[6].replace(where, b"\xff" + where[1:], 1)
    r = check(write(tmp_path / "u.ndjson", t))
    assert r.first_error.line == 7 and r.first_error.reason in {"not_utf8", "chain_mismatch"}


def test_bad_version_and_reordered_keys(tmp_path):
    t = list(SMALL)
    t[3] = t[3].replace(b'{"v":1,', b'{"v":2,', 1)
    assert err(check(write(tmp_path / "a.ndjson", t))) == (4, "bad_version")
    t = list(SMALL)
    t[3] = t[3].replace(b'{"v":1,"seq":3,', b'{"seq":3,"v":1,', 1)
    assert err(check(write(tmp_path / "b.ndjson", t))) == (4, "malformed")
    t = list(SMALL)
    t[3] = t[3].replace(b"\n", b"\r\n")
    assert err(check(write(tmp_path / "c.ndjson", t)))[0] == 4
    assert err(check(write(tmp_path / "d.ndjson", [b"\xef\xbb\xbf" + SMALL[0], *SMALL[1:]])))[0] == 1  # BOM
    assert err(check(write(tmp_path / "e.ndjson", [*SMALL[:5], b"\n", *SMALL[5:]]))) == (6, "malformed")
    assert err(check(write(tmp_path / "f.ndjson", [*SMALL[:5], b" " + SMALL[5], *SMALL[6:]])))[0] == 6


def test_second_session_opened_is_rejected(tmp_path):
    b = SessionBuilder(NS, SID, [KEY])
    t = [b.opened_line(ts(0)), b.line("k", b"{}", ts(1))]
    t.append(
        b.line(
            fmt.KIND_OPENED,
            b'{"session":"%s","origin":"ledger/%s/%s","prev":null}' % ((SID.encode(),) + (NS.encode(), SID.encode())),
            ts(2),
        )
    )
    assert err(check(write(tmp_path / "o.ndjson", t), ALLOW)) == (3, "bad_opened")


def test_opened_origin_must_name_the_session(tmp_path):
    b = SessionBuilder(NS, SID, [KEY], opened_extra={"origin": "ledger/edge-1/someone-else"})
    t = [b.opened_line(ts(0)), b.line("k", b"{}", ts(1))]
    assert err(check(write(tmp_path / "o.ndjson", t), ALLOW)) == (1, "bad_opened")


def test_escaped_special_kind_is_not_hidden(tmp_path):
    """A kind spelled with escapes is compared unescaped (SPEC 2.2)."""
    b = SessionBuilder(NS, SID, [KEY])
    t = [b.opened_line(ts(0)), b.line("x", b"{}", ts(1))]
    event = fmt.encode_event(2, ts(2), "session\\u002esealed", b'{"size":2}')
    t.append(fmt.make_line(event, fmt.next_chain(b.chain, leaf_hash(event))))
    assert err(check(write(tmp_path / "k.ndjson", t), ALLOW)) == (3, "bad_checkpoint")


def _huge_line_file(path: Path, line_bytes: int, lf: bool = True) -> Path:
    _, t = build(3, 10, seal=False)
    with open(path, "wb") as f:
        f.write(b"".join(t))
        f.write(b'{"v":1,"seq":3,"ts":"2026-11-23T20:00:03.003702Z","kind":"k","data":{"a":"')
        chunk = b"a" * 2**20
        for _ in range(line_bytes // len(chunk)):
            f.write(chunk)
        f.write(b'"}}' + (b"\n" if lf else b""))
    return path


# Peak RSS survives exec on Linux: a child started straight from pytest reports pytest's
# own high-water mark. A small launcher process starts the CLI and reads its ru_maxrss
# from os.wait4, so the figure is verify's alone.
_LAUNCH = r"""
import json, os, subprocess, sys
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    p = subprocess.Popen(sys.argv[3:], stdout=out, stderr=err)
    _, status, usage = os.wait4(p.pid, 0)
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss}))
"""


@pytest.fixture(scope="module")
def huge_line_file(tmp_path_factory):
    return _huge_line_file(tmp_path_factory.mktemp("huge") / "huge.ndjson", 50 * 2**20)


@pytest.mark.parametrize("jobs", [["--jobs", "1"], []], ids=["jobs1", "default-jobs"])
def test_50mb_line_fails_with_bounded_memory(tmp_path, huge_line_file, jobs):
    out, errf = tmp_path / "out.json", tmp_path / "err.txt"
    env = {k: v for k, v in os.environ.items() if k != "LEDGER_HMAC_KEY_FILE"}
    cmd = [sys.executable, "-m", "ledger.cli", "verify", "--json", *jobs, str(huge_line_file)]
    launcher = subprocess.run(
        [sys.executable, "-c", _LAUNCH, str(out), str(errf), *cmd], capture_output=True, text=True, env=env, timeout=120
    )
    assert launcher.returncode == 0, launcher.stderr
    result = json.loads(launcher.stdout)
    assert result["exit"] == 1, errf.read_text()
    assert "Traceback" not in errf.read_text()
    e = json.loads(out.read_text())["files"][0]["first_error"]
    assert (e["line"], e["seq"], e["reason"]) == (4, 3, "line_too_long")
    peak_mib = result["maxrss_kib"] / 1024  # Linux reports KiB
    assert peak_mib < 128, f"verify peaked at {peak_mib:.0f} MiB on a 50 MiB line"


def test_too_long_first_line_without_lf(tmp_path):
    path = tmp_path / "h.ndjson"
    with open(path, "wb") as f:
        for _ in range(17):
            f.write(b"b" * 2**20)
    assert err(check(path, ALLOW)) == (1, "line_too_long")


def test_too_long_first_line_reports_seq_0(tmp_path):
    path = tmp_path / "h.ndjson"
    with open(path, "wb") as f:
        for _ in range(17):
            f.write(b"b" * 2**20)
        f.write(b"\n")
    r = check(path)
    assert err(r) == (1, "line_too_long")
    assert r.first_error.seq == 0


def test_line_of_exactly_the_limit_is_not_too_long(tmp_path):
    """16 MiB exactly (LF excluded) is allowed; the check it then fails is the chain."""
    path = tmp_path / "limit.ndjson"
    _, t = build(3, 10, seal=False)
    head = b'{"v":1,"seq":3,"ts":"2026-11-23T20:00:03.003702Z","kind":"k","data":{"a":"'
    tail = b'"},"chain":"' + b"0" * 64 + b'"}'
    pad = fmt.MAX_LINE_BYTES - len(head) - len(tail)
    write(path, [*t, head + b"a" * pad + tail + b"\n"])
    assert err(check(path, ALLOW)) == (4, "chain_mismatch")
    write(path, [*t, head + b"a" * (pad + 1) + tail + b"\n"])
    assert err(check(path, ALLOW)) == (4, "line_too_long")


# ---- 3b. usage and I/O errors (exit 2) -----------------------------------------------


def test_directory_without_sessions(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "notes.txt").write_text("x")
    p = cli("verify", tmp_path / "d")
    assert_one_error_line(p)
    assert "no session files" in p.stderr


def test_missing_path(tmp_path):
    assert_one_error_line(cli("verify", tmp_path / "nope.ndjson"))
    assert_one_error_line(cli("verify", "--json", tmp_path / "nope"))


@pytest.mark.parametrize(
    "content",
    [b"", b"abc\n", KEY.hex().encode()[:-1] + b"\n", KEY.hex().encode() + b"\n\n", b"zz" * 32, KEY],
    ids=["empty", "short", "63-hex", "two-lf", "not-hex", "raw-bytes"],
)
def test_malformed_key_file(tmp_path, content):
    s = write(tmp_path / "s.ndjson", SMALL)
    k = write(tmp_path / "bad.key", content)
    p = cli("verify", "--key-file", k, s)
    assert_one_error_line(p)
    assert str(k) in p.stderr
    if len(content) > 8:
        assert content.decode("latin-1").strip()[:16] not in p.stderr  # never echo key material


def test_missing_key_file(tmp_path):
    s = write(tmp_path / "s.ndjson", SMALL)
    assert_one_error_line(cli("verify", "--key-file", tmp_path / "none.key", s))


def test_key_from_environment(tmp_path):
    s = write(tmp_path / "s.ndjson", SMALL)
    good = write(tmp_path / "good.key", KEY.hex().encode() + b"\n")
    wrong = write(tmp_path / "wrong.key", WRONG_KEY.hex().encode())
    bad = write(tmp_path / "bad.key", b"nothex\n")
    p, report = verify_json(s, env={"LEDGER_HMAC_KEY_FILE": str(good)})
    assert p.returncode == 0 and report["files"][0]["signatures"] == "verified"
    assert report["files"][0]["signers"] == [key_id(KEY)]
    p, report = verify_json(s, env={"LEDGER_HMAC_KEY_FILE": str(wrong)})
    assert p.returncode == 1 and report["files"][0]["first_error"]["reason"] == "bad_signature"
    assert_one_error_line(cli("verify", s, env={"LEDGER_HMAC_KEY_FILE": str(bad)}))
    # --key-file wins over the environment
    p, report = verify_json("--key-file", good, s, env={"LEDGER_HMAC_KEY_FILE": str(bad)})
    assert p.returncode == 0 and report["files"][0]["signatures"] == "verified"


# ---- 4a. torn tails, files being written ----------------------------------------------


def test_torn_tail_counted_exactly(tmp_path):
    _, t = build(10, 4, seal=False)  # seq 0..9, checkpoints at 4 and 8, the last line an event
    for cut in (1, 40, len(t[-1]) - 1):  # the LF is the only byte missing at the last cut
        path = write(tmp_path / "t.ndjson", t[:-1] + [t[-1][:cut]])
        r = check(path, ALLOW)
        assert r.ok and not r.sealed
        assert r.torn_tail_bytes == cut
        assert r.events == len(t) - 1 and r.signed_size == 8
        assert r.bytes == sum(map(len, t[:-1])) + cut
        assert err(check(path)) == (None, "unsealed")


def test_torn_tail_through_cli(tmp_path):
    _, t = build(9, 4, seal=False)
    path = write(tmp_path / "t.ndjson", t[:-1] + [t[-1][:33]])
    p, report = verify_json("--allow-unsealed", path)
    assert p.returncode == 0
    assert report["files"][0]["torn_tail_bytes"] == 33 and report["files"][0]["events"] == len(t) - 1


def test_file_growing_during_verify_is_read_to_its_starting_size(tmp_path, monkeypatch):
    """A writer appending after verify took the size must not change the verdict."""
    _, t = build(9, 4, seal=False)
    path = write(tmp_path / "live.ndjson", t[:6])
    real_scan = verify_mod.scan_chunk

    def scan_then_grow(p, start, end):
        with open(p, "ab") as f:  # the writer gets in between stat and read
            f.write(b"".join(t[6:]) + b'{"v":1,"seq":9,"ts"')
        return real_scan(p, start, end)

    monkeypatch.setattr(verify_mod.parallel, "scan_chunk", scan_then_grow)
    r = verify_file(path, ALLOW)
    assert r.ok and r.events == 6 and r.torn_tail_bytes == 0
    assert r.bytes == sum(map(len, t[:6]))
    assert r.chain == fmt.chain_of_line(t[5])


def _nested_data(depth: int) -> bytes:
    """data nesting ``depth`` levels (the object itself is level 1)."""
    return b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [fmt.MAX_DATA_DEPTH + 1, 900, 5000])
def test_data_nested_past_the_limit_is_malformed_at_its_line(tmp_path, depth):
    """SPEC 2.1: at most 128 levels. Deeper is `malformed` at that line whatever the interpreter's
    stack allows (msgspec's own limit moves with it and 5000 levels used to be an internal error)."""
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0)), b.line("conn.anomaly", _nested_data(fmt.MAX_DATA_DEPTH), ts(1))]
    lines += [b.line("conn.anomaly", _nested_data(depth), ts(2)), b.seal_line(ts(3), "closed", 0)]
    path = write(tmp_path / "deep.ndjson", lines)
    r = check(path)
    assert err(r) == (3, "malformed") and str(fmt.MAX_DATA_DEPTH) in r.first_error.detail
    p, report = verify_json("--key-file", FIXTURES / "test.key", path)
    assert p.returncode == 1 and report["files"][0]["first_error"]["line"] == 3
    write(path, lines[:2] + [lines[2][:-6] + b"\n"])  # the same line with its shape broken: still malformed
    assert err(check(path, ALLOW)) == (3, "malformed")


def test_data_nested_to_the_limit_verifies(tmp_path):
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0)), b.line("conn.anomaly", _nested_data(fmt.MAX_DATA_DEPTH), ts(1))]
    path = write(tmp_path / "deep.ndjson", [*lines, b.seal_line(ts(2), "closed", 0)])
    assert check(path).ok


# ---- 4b. parallel chunks = one pass --------------------------------------------------


def _comparable(r: FileReport) -> dict:
    """Everything a report says but its path (root and chain included, failed or not)."""
    d = r.as_dict()
    d.pop("path")
    return d


def _prefix_root_and_chain(lines: list[bytes], n: int) -> tuple[str, str]:
    acc = Accumulator()
    for line in lines[:n]:
        acc.append(leaf_hash(fmt.event_of_line(line)))
    return acc.root().hex(), (fmt.chain_of_line(lines[n - 1]) if n else "")


@pytest.fixture
def big_session(tmp_path, monkeypatch):
    monkeypatch.setattr(verify_mod.parallel, "PARALLEL_MIN_BYTES", 64 * 2**10)
    _, t = build(1500, 100)
    path = write(tmp_path / "big.ndjson", t)
    assert path.stat().st_size > 4 * 64 * 2**10
    calls = []
    real = verify_mod.parallel._boundaries

    def spy(*a):
        calls.append(real(*a))
        return calls[-1]

    monkeypatch.setattr(verify_mod.parallel, "_boundaries", spy)
    _HANGS.clear()
    return path, t, calls


# A bug this suite found (fixed in ledger/verify/parallel.py _scan_in_processes): stopping at a bad line closed a
# `with Pool(...)` around imap, Pool.terminate() SIGTERMed workers, one killed mid-put kept the
# result queue's write lock, and terminate() waited forever. The guard below keeps a regression
# from stalling the suite; test_parallel_verify_stopping_early_never_hangs catches it.
POOL_HANG_BUG = (
    "parallel verify hung after stopping early: Pool.terminate() killed a worker holding the result "
    "queue's lock (see ledger/verify/parallel.py _scan_in_processes)"
)


class _Hung(Exception):
    pass


_HANGS: list[str] = []  # parallel runs of this test that hung (POOL_HANG_BUG); reset by big_session


def _parallel_verify(path: Path, policy: Policy, seconds: float = 10.0) -> FileReport:
    """verify_file with jobs=2, guarded so that a hang (POOL_HANG_BUG) fails the test, not the suite.

    The alarm interrupts the blocked join. Raised inside the generator's finalization it is only
    reported as unraisable and verify_file still returns its (complete) report: the hang is
    recorded and the test goes on comparing, then fails. Raised anywhere else, the test fails now.
    """

    def on_alarm(signum, frame):
        _HANGS.append(str(path))
        raise _Hung

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return verify_file(path, replace(policy, jobs=2))
    except _Hung:
        pytest.fail(POOL_HANG_BUG)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _fail_if_hung() -> None:
    if _HANGS:
        pytest.fail(f"{len(_HANGS)} run(s) hung (results still compared): {POOL_HANG_BUG}")


def _both(path: Path, policy: Policy, calls: list) -> FileReport:
    serial = verify_file(path, replace(policy, jobs=1))
    n = len(calls)
    parallel = _parallel_verify(path, policy)
    assert len(calls) == n + 1 and len(calls[-1]) > 2, "the parallel path did not run"
    assert _comparable(parallel) == _comparable(serial)
    return serial


_EARLY_STOP_LOOP = r"""
import faulthandler, sys
from ledger import format as fmt, verify
from ledger.session import SessionBuilder
verify.parallel.PARALLEL_MIN_BYTES = 1
key = bytes(range(32))
b = SessionBuilder("edge-1", "20261123T200000.000000Z-hang", [key])
lines = [b.opened_line(fmt.format_ts(0))]
for i in range(1, 20000):
    lines.append(b.line("conn.anomaly", b'{"i":%d,"pad":"%s"}' % (i, b"x" * 40), fmt.format_ts(i)))
lines[1] = lines[1].replace(b'"i":1', b'"i":7')  # line 2 is bad: verify stops in the first chunk
path = sys.argv[1]
open(path, "wb").write(b"".join(lines))
policy = verify.Policy(keys=(key,), jobs=8)
for _ in range(30):
    faulthandler.dump_traceback_later(5, exit=True)  # a hung run exits 1 with the stacks
    assert verify.verify_file(path, policy).first_error.line == 2
faulthandler.cancel_dump_traceback_later()
"""


def test_parallel_verify_stopping_early_never_hangs(tmp_path):
    """30 parallel runs that stop at line 2; with terminate() one used to hang within about ten."""
    p = subprocess.run(
        [sys.executable, "-c", _EARLY_STOP_LOOP, str(tmp_path / "s.ndjson")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-3000:]


def _line_starting_at(lines: list[bytes], offset: int) -> int:
    pos = 0
    for i, line in enumerate(lines):
        if pos == offset:
            return i
        pos += len(line)
    raise AssertionError(offset)


def test_parallel_matches_serial_when_intact(big_session):
    path, t, calls = big_session
    r = _both(path, KEYED, calls)
    assert r.ok and r.sealed and r.events == len(t) == 1501
    assert r.checkpoints == 15 and r.signed_size == 1500
    r = _both(path, Policy(), calls)
    assert r.ok and r.signatures == "unchecked"
    _fail_if_hung()


def test_parallel_matches_serial_on_tamper_near_chunk_boundaries(big_session, tmp_path):
    path, t, calls = big_session
    _both(path, KEYED, calls)
    bounds = calls[-1]
    firsts = [_line_starting_at(t, a) for a, _ in bounds[1:]]
    targets = {len(t) // 2}
    for j in firsts[:4]:
        targets |= {j - 1, j, j + 1}
    for k in sorted(targets):
        bad = list(t)
        bad[k] = bad[k].replace(b'"i":', b'"I":', 1) if b'"i":' in bad[k] else bad[k].replace(b'"size"', b'"Size"')
        assert bad[k] != t[k]
        write(path, bad)
        r = _both(path, KEYED, calls)
        assert err(r)[0] == k + 1, k
        # a damaged stored chain on the last line of a chunk: the next chunk starts from it
        bad = list(t)
        bad[k] = bad[k][:-4] + bytes([bad[k][-4] ^ 1]) + bad[k][-3:]
        write(path, bad)
        assert err(_both(path, KEYED, calls)) == (k + 1, "chain_mismatch"), k
    for j in firsts[:3]:
        write(path, t[:j] + t[j + 1 :])  # a line deleted at a boundary
        assert err(_both(path, KEYED, calls)) == (j + 1, "seq_mismatch")
        write(path, t[: j + 1] + [t[j]] + t[j + 1 :])  # duplicated
        assert err(_both(path, KEYED, calls)) == (j + 2, "seq_mismatch")
    _fail_if_hung()


def test_parallel_matches_serial_on_wrong_key_and_after_seal(big_session):
    path, t, calls = big_session
    assert err(_both(path, Policy(keys=(WRONG_KEY,)), calls)) == (101, "bad_signature")
    write(path, [*t, forged(t[-1], len(t))])
    assert err(_both(path, KEYED, calls)) == (len(t) + 1, "after_seal")
    write(path, t[:-1] + [t[-1][:-1]])  # the seal's LF gone: it is a torn tail
    assert err(_both(path, KEYED, calls)) == (None, "unsealed")
    r = _both(path, ALLOW, calls)
    assert r.ok and r.torn_tail_bytes == len(t[-1]) - 1 and r.signed_size == 1400
    _fail_if_hung()


def test_parallel_last_chunk_holding_only_a_torn_tail(big_session):
    """A cut can fall inside the last complete line, leaving a chunk with nothing but the torn
    tail. That chunk has no leaves: merging its empty range used to fail ("ranges not adjacent")."""
    path, _, calls = big_session
    b, t = build(1500, 100, seal=False)
    huge = b.line("conn.anomaly", b'{"pad":"%s"}' % (b"x" * 200_000), ts(1500))
    torn = b'{"v":1,"seq":1501,"ts":"2026-11-23T20:25:01.000000Z","k'
    write(path, [*t, huge, torn])
    r = _both(path, ALLOW, calls)
    assert r.ok and r.events == len(t) + 1 and r.torn_tail_bytes == len(torn)
    assert any(a == path.stat().st_size - len(torn) for a, _ in calls[-1]), "no chunk held only the tail"
    seal = b.seal_line(ts(1501), "closed", 0)
    write(path, [*t, huge, seal, torn])  # and after a seal: the same verdict both ways
    _both(path, ALLOW, calls)
    _fail_if_hung()


def test_failed_report_root_and_chain_describe_the_verified_lines(big_session):
    path, t, calls = big_session
    k = len(t) // 2
    bad = list(t)
    bad[k] = bad[k].replace(b'"i":', b'"I":', 1)
    write(path, bad)
    for r in (verify_file(path, KEYED), _parallel_verify(path, KEYED)):
        assert err(r)[0] == k + 1 and r.events == k
        assert (r.root, r.chain) == _prefix_root_and_chain(t, k)
    _fail_if_hung()


# ---- 4c. directories and prev links ----------------------------------------------------

S1, S2, S3 = (f"20261123T2{m}0000.000000Z-d{m}" for m in (1, 2, 3))


def _two_sessions(root: Path, prev2=None, seal1: bool = True):
    b1, t1 = build(9, 4, session=S1, seal=seal1)
    prev = b1.summary() if prev2 is None else prev2
    b2, t2 = build(7, 4, session=S2, prev=prev, offset_s=3600)
    write(root / NS / f"{S1}.ndjson", t1)
    write(root / NS / f"{S2}.ndjson", t2)
    return b1, b2


def test_directory_with_linked_sessions(tmp_path):
    b1, b2 = _two_sessions(tmp_path)
    b3, t3 = build(5, 4, session=S3, prev=b2.summary(), offset_s=7200)
    write(tmp_path / NS / f"{S3}.ndjson", t3)
    write(tmp_path / "other-ns" / f"{S1}.ndjson", build(5, 4, session=S1, ns="other-ns")[1])
    rep = verify_path([tmp_path], KEYED)
    assert rep.ok and len(rep.files) == 4
    assert [f.session for f in rep.files] == [S1, S2, S3, S1]
    assert rep.files[1].prev == b1.summary()
    p, report = verify_json("--key-file", write(tmp_path / "k.key", KEY.hex().encode()), tmp_path / NS)
    assert p.returncode == 0 and len(report["files"]) == 3


@pytest.mark.parametrize(
    "prev",
    [
        fmt.PrevLink(session=S1, size=10, root="0" * 64, chain="0" * 64),
        "wrong-size",
        "wrong-session",
    ],
    ids=["zeros", "size", "session"],
)
def test_directory_with_broken_prev_link(tmp_path, prev):
    b1, _ = build(9, 4, session=S1)
    good = b1.summary()
    if prev == "wrong-size":
        prev = fmt.PrevLink(session=S1, size=good.size - 1, root=good.root, chain=good.chain)
    elif prev == "wrong-session":
        prev = fmt.PrevLink(session=S3, size=good.size, root=good.root, chain=good.chain)
    _two_sessions(tmp_path, prev2=prev)
    rep = verify_path([tmp_path], KEYED)
    assert rep.files[0].ok
    assert err(rep.files[1]) == (1, "prev_mismatch")
    assert not rep.ok


def test_prev_null_after_a_session(tmp_path):
    _two_sessions(tmp_path)
    write(tmp_path / NS / f"{S2}.ndjson", build(7, 4, session=S2, prev=None, offset_s=3600)[1])
    assert err(verify_path([tmp_path], KEYED).files[1]) == (1, "prev_mismatch")


def test_skipping_a_session_breaks_the_link(tmp_path):
    b1, _ = _two_sessions(tmp_path)
    write(tmp_path / NS / f"{S3}.ndjson", build(5, 4, session=S3, prev=b1.summary(), offset_s=7200)[1])
    rep = verify_path([tmp_path], KEYED)
    assert [err(f) for f in rep.files] == [(None, None), (None, None), (1, "prev_mismatch")]


def test_broken_prev_link_through_cli(tmp_path):
    b1, _ = build(9, 4, session=S1)
    _two_sessions(tmp_path, prev2=fmt.PrevLink(session=S1, size=10, root="1" * 64, chain="2" * 64))
    p, report = verify_json("--key-file", write(tmp_path / "k.key", KEY.hex().encode()), tmp_path / NS)
    assert p.returncode == 1
    assert report["files"][0]["first_error"] is None
    e = report["files"][1]["first_error"]
    assert (e["line"], e["reason"]) == (1, "prev_mismatch")


def test_unsealed_predecessor_is_a_note(tmp_path):
    _two_sessions(tmp_path, seal1=False, prev2=fmt.PrevLink(session=S1, size=1, root="0" * 64, chain="0" * 64))
    rep = verify_path([tmp_path], ALLOW)
    assert rep.ok
    assert any("unsealed" in n for n in rep.files[1].notes)


def test_archived_prev_is_reported_not_checked(tmp_path):
    b1, _ = build(9, 4, session=S1)
    b2, t2 = build(7, 4, session=S2, prev=b1.summary(), offset_s=3600)
    write(tmp_path / NS / f"{S2}.ndjson", t2)
    write(tmp_path / NS / f"{S3}.ndjson", build(5, 4, session=S3, prev=b2.summary(), offset_s=7200)[1])
    rep = verify_path([tmp_path], KEYED)
    assert rep.ok and any("not here" in n for n in rep.files[0].notes)


def test_lone_session_with_archived_prev_is_reported_not_checked(tmp_path):
    b1, _ = build(9, 4, session=S1)
    write(tmp_path / NS / f"{S2}.ndjson", build(7, 4, session=S2, prev=b1.summary(), offset_s=3600)[1])
    rep = verify_path([tmp_path], KEYED)
    assert rep.ok and any("not here" in n for n in rep.files[0].notes)


def test_many_files_in_workers_match_one_process(tmp_path, monkeypatch):
    """Small files go to worker processes one each when there are enough bytes: same reports."""
    b1, b2 = _two_sessions(tmp_path / "a")
    write(tmp_path / "a" / NS / f"{S3}.ndjson", build(5, 4, session=S3, prev=b2.summary(), offset_s=7200)[1])
    _two_sessions(tmp_path / "b", prev2=fmt.PrevLink(session=S1, size=10, root="1" * 64, chain="2" * 64))
    bad = list(SMALL)
    bad[6] = bad[6].replace(b"client-", b"clienT-", 1)
    write(tmp_path / "c" / "other" / f"{SID}.ndjson", bad)
    write(tmp_path / "d.ndjson", SMALL)
    sizes = [q.stat().st_size for q in tmp_path.rglob("*.ndjson")]
    monkeypatch.setattr(verify_mod.parallel, "PARALLEL_MIN_BYTES", max(sizes) + 1)  # each small, all together not
    assert sum(sizes) > max(sizes) + 1
    forks = []
    real_get_context = verify_mod.parallel.multiprocessing.get_context
    monkeypatch.setattr(
        verify_mod.parallel.multiprocessing, "get_context", lambda *a: forks.append(a) or real_get_context(*a)
    )
    paths = [tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "d.ndjson"]
    serial = verify_path(paths, KEYED)
    assert not forks
    parallel = verify_path(paths, replace(KEYED, jobs=2))
    assert forks, "the worker path did not run"
    assert [_comparable(f) for f in parallel.files] == [_comparable(f) for f in serial.files]
    assert [err(f) for f in serial.files] == [(None, None)] * 4 + [(1, "prev_mismatch"), (7, "chain_mismatch")] + [
        (None, None)
    ]


def test_tampered_predecessor_fails_alone(tmp_path):
    _two_sessions(tmp_path)
    path = tmp_path / NS / f"{S1}.ndjson"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"client-", b"clienT-", 1))
    rep = verify_path([tmp_path], KEYED)
    assert err(rep.files[0])[0] is not None
    assert rep.files[1].ok  # its link is not judged against a file that did not verify


# ---- 4d. stderr hygiene -----------------------------------------------------------------


def test_human_report_failures_are_one_line_each(tmp_path):
    paths = []
    for name, t in {
        "flip": [SMALL[0], SMALL[1].replace(b"client", b"cliemt"), *SMALL[2:]],
        "deleted": SMALL[:3] + SMALL[4:],
        "after": [*SMALL, forged(SMALL[-1], N)],
        "unsealed": SMALL[:7],
    }.items():
        paths.append(write(tmp_path / f"{name}-with-a-rather-long-file-name-to-tempt-wrapping.ndjson", t))
    p = cli("verify", "--key-file", write(tmp_path / "k.key", KEY.hex().encode()), *paths)
    assert p.returncode == 1 and p.stdout == ""
    assert "Traceback" not in p.stderr
    fails = [line for line in p.stderr.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 4, p.stderr
    for line, path, want in zip(fails, paths, ["line 2", "line 4", "line 13", "file"], strict=True):
        assert str(path) in line and f": {want}: " in line, line
    assert p.stderr.splitlines()[-1].startswith("FAIL: 0/4 files")


def test_json_failures_keep_stderr_clean(tmp_path):
    p, report = verify_json(write(tmp_path / "s.ndjson", SMALL[:5]))
    assert p.returncode == 1 and p.stderr == ""
    assert report["files"][0]["first_error"]["reason"] == "unsealed"


def test_markup_inside_a_tampered_line_is_still_an_evidence_failure(tmp_path):
    t = [SMALL[0], b'{"[/x]":1,"v":1}\n', *SMALL[2:]]
    path = write(tmp_path / "m.ndjson", t)
    assert err(check(path)) == (2, "malformed")
    p = cli("verify", path)
    assert "Traceback" not in p.stderr
    assert p.returncode == 1, p.stderr
    fail_line = next(x for x in p.stderr.splitlines() if x.startswith("FAIL "))
    assert ": line 2: malformed: " in fail_line and "[/x]" in fail_line


@pytest.mark.parametrize("name", ["[bold]s.ndjson", "q[/b]s.ndjson"])
def test_paths_are_printed_verbatim(tmp_path, name):
    path = write(tmp_path / name, SMALL)
    p = cli("verify", path)
    assert p.returncode == 0, p.stderr
    assert f"PASS {path}: " in p.stderr


# ---- 4d. the newest session against .last-seal.json (SPEC 5, 7) --------------------------


def _namespace_of_three(tmp_path) -> tuple[Path, list[Path]]:
    """A namespace written by the writer: three sealed sessions and its .last-seal.json."""
    from ledger import Ledger

    root = tmp_path / "root"
    for i in range(3):
        with Ledger.open(root, namespace=NS, hmac_key=KEY) as led:
            led.record("app.event", {"i": i})
    ns_dir = root / NS
    return ns_dir, sorted(ns_dir.glob("*.ndjson"))


def test_deleted_newest_session_is_missing_session(tmp_path):
    ns_dir, (s1, s2, s3) = _namespace_of_three(tmp_path)
    assert verify_path([ns_dir], KEYED).ok
    s3.unlink()  # every other session still verifies and links: only the record tells
    rep = verify_path([ns_dir], KEYED)
    assert not rep.ok
    [missing] = [f for f in rep.files if not f.ok]
    assert missing.first_error.reason == "missing_session" and missing.session == s3.stem
    assert missing.path == str(s3)
    p, report = verify_json("--key-file", FIXTURES / "test.key", ns_dir)
    assert p.returncode == 1
    assert [f["first_error"]["reason"] for f in report["files"] if f["first_error"]] == ["missing_session"]
    p = cli("verify", "--key-file", FIXTURES / "test.key", ns_dir)
    assert p.returncode == 1 and "missing_session" in p.stderr and "Traceback" not in p.stderr


def test_missing_newest_session_recorded_as_archived_passes(tmp_path):
    from ledger import Ledger

    ns_dir, sessions = _namespace_of_three(tmp_path)
    led = Ledger.open(ns_dir.parent, namespace=NS, hmac_key=KEY)  # the archiver's writer
    try:
        for s in sessions:  # archived and deleted locally, oldest first, each recorded
            led.record(
                "archive.local_deleted", {"batch_id": f"b-{s.stem}", "session": s.stem, "path": str(s), "bytes": 1}
            )
        assert led.flush(timeout=10)
        for s in sessions:
            s.unlink()
        allow = Policy(keys=(KEY,), allow_unsealed=True, jobs=1)
        rep = verify_path([ns_dir], allow)
        assert rep.ok, [(f.path, f.first_error) for f in rep.files]
        assert any("archived and deleted locally" in n for f in rep.files for n in f.notes)
    finally:
        led.close()
    assert verify_path([ns_dir], KEYED).ok


def test_forged_last_seal_without_the_key_is_detected(tmp_path):
    ns_dir, (s1, s2, s3) = _namespace_of_three(tmp_path)
    s3.unlink()
    # the insider rewrites the record to name s2, without the key: the MAC cannot match
    record = json.loads((ns_dir / ".last-seal.json").read_bytes())
    summary = verify_mod.prev_link(verify_file(s2))
    forged = dict(record, session=summary.session, size=summary.size, root=summary.root, chain=summary.chain)
    (ns_dir / ".last-seal.json").write_text(json.dumps(forged))
    rep = verify_path([ns_dir], KEYED)
    [bad] = [f for f in rep.files if not f.ok]
    assert bad.path == str(ns_dir / ".last-seal.json") and bad.first_error.reason == "bad_signature"
    # without a key the record is reported as unauthenticated, never trusted either way
    rep = verify_path([ns_dir], Policy(jobs=1))
    assert rep.ok and any("unauthenticated" in n for f in rep.files for n in f.notes)


def test_stale_last_seal_after_a_crash_is_not_an_evidence_problem(tmp_path):
    ns_dir, (s1, s2, s3) = _namespace_of_three(tmp_path)
    from ledger import lastseal

    summary = verify_mod.prev_link(verify_file(s2))
    (ns_dir / ".last-seal.json").write_bytes(lastseal.make(NS, summary, KEY))  # as a crash leaves it
    rep = verify_path([ns_dir], KEYED)
    assert rep.ok and any("older than the newest sealed session" in n for f in rep.files for n in f.notes)


# ---- 4e. keygen -----------------------------------------------------------------------


def test_keygen_writes_0600_key_and_refuses_overwrite(tmp_path):
    k = tmp_path / "new.key"
    p = cli("keygen", "--hmac", k)
    assert p.returncode == 0, p.stderr
    assert stat.S_IMODE(k.stat().st_mode) == 0o600
    key = load_key_file(k)
    assert len(key) == 32 and key != KEY
    assert p.stdout.strip() == key_id(key)
    assert key.hex() not in p.stdout + p.stderr
    before = k.read_bytes()
    p = cli("keygen", "--hmac", k)
    assert_one_error_line(p)
    assert k.read_bytes() == before
    assert_one_error_line(cli("keygen", "--hmac", tmp_path / "no" / "such" / "dir.key"))
    # and the new key works end to end
    _, t = build(5, 4, keys=(key,))
    p, report = verify_json("--key-file", k, write(tmp_path / "s.ndjson", t))
    assert p.returncode == 0 and report["files"][0]["signers"] == [key_id(key)]
