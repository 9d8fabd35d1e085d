"""Tests for ledger._speedups, the optional C hot loop of ledger.verify.

The contract (top of ledger/_speedups.c): ``scan()`` may only ACCEPT a line that the
reference loop (verify.scan._scan_lines) accepts, with exactly the same effect on the scan
state (chain, seq, the compact range's stack), and DECLINES everything else, which the
reference then decides. Declining is always safe; accepting wrongly is the one bug that
matters. So every test here is either a primitive against its Python counterpart or a
differential: the same input through verify with the helper and with
``verify.scan._speedups = None`` must give identical results, field by field.

1. The primitives: ``sha256`` against hashlib; ``json_object_ok`` never accepting what
   msgspec rejects (and accepting compact JSON objects); ``utf8_ok`` against
   ``bytes.decode``.
2. Differential scans: SessionBuilder sessions, every committed fixture, chunks that
   start (and end) mid-file, correctly chained lines of arbitrary content, every byte
   of a small session changed, tiny read blocks, torn tails, lines over the length
   limit, gzip streams, the parallel path.
3. The helper really carries the load: ``scan()`` called directly accepts every plain
   line and declines the rest without touching the state.
4. The environment: ``LEDGER_PURE_PYTHON=1`` turns the helper off;
   ``LEDGER_PORTABLE_SHA256=1`` selects the portable SHA-256 (checked in a fresh
   interpreter, so both implementations are covered on a CPU with the SHA extensions).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import format as fmt
from ledger import verify
from ledger.format import format_ts
from ledger.merkle import leaf_hash
from ledger.session import SessionBuilder
from ledger.verify import Policy
from ledger.verify import parallel as verify_parallel
from ledger.verify import scan as verify_scan

try:
    from ledger import _speedups
except ImportError as exc:  # built without a C compiler: verify runs the reference alone
    pytest.skip(
        f"ledger._speedups is not built ({exc}); rebuild with `pip install -e .` and a C compiler to test it",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "fixtures"
KEY = bytes(range(32))
NS = "edge-1"
SID = "20261123T200000.000000Z-sp1"
T0 = 1_795_464_000  # 2026-11-23T20:00:00Z
KEYED = Policy(keys=(KEY,), jobs=1)
ALLOW = Policy(keys=(KEY,), allow_unsealed=True, jobs=1)
UNKEYED = Policy(allow_unsealed=True, jobs=1)
MSGSPEC_RAW = msgspec.json.Decoder(msgspec.Raw)


# ---- helpers ------------------------------------------------------------------------


def ts(seq: int) -> str:
    return format_ts(T0 + seq + seq * 1234 / 1e6)


NOTES = ("plain", "ü✓ ß", 'q " b \\ t\t', "\u2028 sep", "", "😀 astral", "\x7f del \x01 ctl")


def data_of(seq: int, pad: int = 0) -> bytes:
    obj = {"i": seq, "cn": f"client-{seq % 3}", "note": NOTES[seq % len(NOTES)], "pad": "x" * pad}
    if seq % 4 == 3:
        obj["nest"] = {"a": [1, 2.5, None, True, -0.0, 1e300], "b": {}}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def make_session(
    size: int,
    checkpoint_every: int = 0,
    *,
    seal: bool = True,
    pad_of=lambda seq: 0,
    kind_of=lambda seq: "conn.anomaly",
) -> list[bytes]:
    """Seq 0 opened; a checkpoint at each multiple of ``checkpoint_every``; the seal at ``size``."""
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0))]
    for seq in range(1, size):
        if checkpoint_every and seq % checkpoint_every == 0:
            lines.append(b.checkpoint_line(ts(seq)))
        else:
            lines.append(b.line(kind_of(seq), data_of(seq, pad_of(seq)), ts(seq)))
    if seal:
        lines.append(b.seal_line(ts(size), "closed", 0))
    return lines


def append_raw(b: SessionBuilder, event: bytes) -> bytes:
    """The line for an arbitrary event ``E_i``, chained on ``b`` (whose state follows it)."""
    leaf = leaf_hash(event)
    b.chain = fmt.next_chain(b.chain, leaf)
    b.tree.append(leaf)
    return fmt.make_line(event, b.chain)


def write(path: Path, content: list[bytes] | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else b"".join(content))
    return path


def line_starts(lines: list[bytes]) -> list[int]:
    out, at = [], 0
    for line in lines:
        out.append(at)
        at += len(line)
    return out


CHUNK_FIELDS = {"lines", "first_seq", "range", "specials", "error", "last_chain", "torn_bytes", "sealed_rel"}
SPECIAL_FIELDS = {"rel_line", "seq", "kind", "data", "before", "prev_chain", "ts"}


def range_facts(r) -> tuple | None:
    return None if r is None else (r.begin, r.end, list(r.nodes))


def chunk_facts(c: verify._Chunk) -> dict:
    """Every field of a _Chunk, the compact ranges as plain tuples."""
    assert {f.name for f in dataclasses.fields(c)} == CHUNK_FIELDS, "_Chunk changed: compare the new field here"
    facts = {name: getattr(c, name) for name in CHUNK_FIELDS}
    facts["range"] = range_facts(c.range)
    specials = []
    for sp in c.specials:
        assert {f.name for f in dataclasses.fields(sp)} == SPECIAL_FIELDS, "_Special changed: compare it here"
        specials.append({name: getattr(sp, name) for name in SPECIAL_FIELDS} | {"before": range_facts(sp.before)})
    facts["specials"] = specials
    return facts


def report_facts(r: verify.FileReport) -> dict:
    """as_dict() and what it leaves out: bytes, origin, prev, the verified tree."""
    return r.as_dict() | {"bytes": r.bytes, "origin": r.origin, "prev": r.prev, "tree": range_facts(r.tree)}


class CountingHelper:
    """_speedups as verify sees it (verify only calls scan), counting the lines scan() accepted."""

    def __init__(self) -> None:
        self.calls = 0
        self.accepted = 0

    def scan(self, *args):
        pos, count, chain = _speedups.scan(*args)
        self.calls += 1
        self.accepted += count
        return pos, count, chain


@contextmanager
def patched(module, name: str, value):
    """<module>.<name> = value for a while (monkeypatch's effect, at a fraction of its cost)."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def helper(module):
    """verify with this helper module (None: the reference loop alone)."""
    return patched(verify_scan, "_speedups", module)


def outcome(fn, *args):
    """fn(*args), or what it raised: both paths must also fail the same way."""
    try:
        return fn(*args)
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def both_ways(fn, *args) -> tuple[object, object, CountingHelper]:
    """fn(*args) with the C helper and with the reference alone, and the helper's counts."""
    counting = CountingHelper()
    with helper(counting):
        with_c = outcome(fn, *args)
    with helper(None):
        pure = outcome(fn, *args)
    return with_c, pure, counting


def scan_facts(path: Path, start: int, end: int) -> dict:
    return chunk_facts(verify.scan_chunk(str(path), start, end))


def file_facts(path: Path, policy: Policy = KEYED) -> dict:
    return report_facts(verify.verify_file(path, policy))


def assert_same(what: str, with_c, pure) -> None:
    assert with_c == pure, f"C helper and reference differ on {what}:\n  C:    {with_c!r}\n  pure: {pure!r}"


def assert_same_everywhere(path: Path, policies=(KEYED, UNKEYED)) -> tuple[dict, CountingHelper]:
    """scan_chunk over the whole file and verify_file under each policy agree both ways."""
    size = path.stat().st_size
    with_c, pure, counting = both_ways(scan_facts, path, 0, size)
    assert_same(f"scan_chunk({path.name}, 0, {size})", with_c, pure)
    for policy in policies:
        c_report, pure_report, _ = both_ways(file_facts, path, policy)
        assert_same(f"verify_file({path.name}, {policy})", c_report, pure_report)
    return pure, counting


def plain_lines_accepted(pure: dict, escaped_kinds: tuple[int, ...] = ()) -> int:
    """The lines a scan must leave to the helper, given the reference's chunk: every line
    it accepted but the chunk's first (the reference's, to set seq), the specials and
    those with an escaped kind (0-based within the chunk).

    Exact, not a bound: a helper whose hashing is wrong declines every line (the chain
    compare fails and the reference takes the line), which no differential can see.
    """
    specials = pure["specials"]
    first_plain = pure["lines"] > 0 and not (specials and specials[0]["rel_line"] == 0)
    return pure["lines"] - len(specials) - first_plain - sum(0 < i < pure["lines"] for i in escaped_kinds)


# ---- 1. the primitives --------------------------------------------------------------


def _bytes_of(n: int, seed: int = 0) -> bytes:
    return random.Random(n * 1_000_003 + seed).randbytes(n)


def test_sha256_impl_is_named():
    assert _speedups.SHA256_IMPL in ("sha-ni", "portable")


def test_sha256_every_length_up_to_300():
    for n in range(301):
        data = _bytes_of(n)
        assert _speedups.sha256(data) == hashlib.sha256(data).digest(), n


def test_sha256_around_block_boundaries():
    # the padding decision (55/56 bytes left), one and many whole blocks, the carry-over
    for k in range(1, 40):
        for n in (64 * k - 9, 64 * k - 8, 64 * k - 7, 64 * k - 1, 64 * k, 64 * k + 1, 64 * k + 55, 64 * k + 56):
            data = _bytes_of(n, 1)
            assert _speedups.sha256(data) == hashlib.sha256(data).digest(), n


def test_sha256_of_a_few_megabytes():
    data = _bytes_of(5 * 2**20 + 13, 2)
    assert _speedups.sha256(data) == hashlib.sha256(data).digest()
    zeros = bytes(3 * 2**20)
    assert _speedups.sha256(zeros) == hashlib.sha256(zeros).digest()


def test_sha256_of_any_buffer_at_any_alignment():
    data = _bytes_of(1000, 3)
    for start in range(17):
        view = memoryview(data)[start : start + 200 + start]
        assert _speedups.sha256(view) == hashlib.sha256(view).digest(), start
    assert _speedups.sha256(bytearray(data)) == hashlib.sha256(data).digest()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_sha256_matches_hashlib(data):
    assert _speedups.sha256(data) == hashlib.sha256(data).digest()


# json_object_ok: sound against msgspec (what scan() accepts, the reference accepts).

JSON_FRAGMENTS = [
    b"{", b"}", b"[", b"]", b'"', b"\\", b":", b",", b" ", b"\t", b"\r", b"\n",
    b"0", b"1", b"9", b"-", b".", b"e", b"E", b"+", b"true", b"false", b"null", b"tru", b"nul",
    b'"a"', b'"k":', b"\\u00e9", b"\\u00", b"\\u", b"\\ud800", b"\\udc00", b"\\ud83d\\ude00",
    b"\\n", b"\\x", b"\\/", b'\\"', b"\\\\", "é".encode(), "✓".encode(), "😀".encode(),
    b"\xc0\x80", b"\xed\xa0\x80", b"\xff", b"\x00", b"\x1f", b"\x7f",
    b"01", b"1.", b"1e", b"1e+", b"-0", b"0.5e-3", b"NaN", b"Infinity", b'{"a":1}', b"[1,2]",
]  # fmt: skip

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # no lone surrogates
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


COMPACT_OBJECTS = st.dictionaries(TEXT, JSON_VALUES, max_size=4).map(compact)
JSON_ISH = st.lists(st.sampled_from(JSON_FRAGMENTS), max_size=24).map(b"".join)


@st.composite
def mutated_objects(draw) -> bytes:
    """A valid compact object with one to three bytes inserted, deleted or replaced."""
    b = bytearray(draw(COMPACT_OBJECTS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        at = draw(st.integers(0, len(b)))
        byte = draw(st.one_of(st.integers(0, 255), st.sampled_from(b'{}[]":,\\ 0-.eu')))
        if op == "insert":
            b.insert(at, byte)
        elif at < len(b):
            if op == "delete":
                del b[at]
            else:
                b[at] = byte
    return bytes(b)


JSON_CANDIDATES = st.one_of(
    JSON_ISH, JSON_ISH.map(lambda b: b"{" + b), COMPACT_OBJECTS, mutated_objects(), st.binary(max_size=40)
)


def msgspec_accepts(data: bytes) -> bool:
    try:
        MSGSPEC_RAW.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def assert_json_sound(data: bytes) -> None:
    if _speedups.json_object_ok(data):
        assert data[:1] == b"{", data
        assert msgspec_accepts(data), f"json_object_ok accepts what msgspec rejects: {data!r}"
        # msgspec skips string contents unchecked; the helper checks UTF-8 inside strings
        # (outside them JSON admits ASCII only), and verify needs all of E_i to decode
        assert decodes(data), f"json_object_ok accepts invalid UTF-8: {data!r}"


@settings(max_examples=600, deadline=None)
@given(JSON_CANDIDATES)
def test_json_object_ok_never_accepts_what_msgspec_rejects(data):
    assert_json_sound(data)


@settings(max_examples=100, deadline=None)
@given(COMPACT_OBJECTS)
def test_json_object_ok_accepts_compact_objects(data):
    assert _speedups.json_object_ok(data), data
    assert msgspec_accepts(data)


@settings(max_examples=100, deadline=None)
@given(JSON_VALUES)
def test_json_object_ok_accepts_any_value_wrapped_in_an_object(value):
    assert _speedups.json_object_ok(compact({"v": value, "w": [value]}))


JSON_ACCEPTED = [
    b"{}",
    b'{"a":1}',
    b'{"a":"\\u00e9"}',
    b'{"a":"\\u00E9\\u0000\\uFFFF"}',
    b'{"a":"\\"\\\\\\/\\b\\f\\n\\r\\t"}',
    '{"a":"é✓😀\u2028"}'.encode(),
    b'{"a":"\x7f"}',
    b'{"a":-0,"b":0.5e-3,"c":1E+2,"d":-1.5e-300,"e":123456789012345678901234567890}',
    b'{"a":[],"b":{},"c":[{}],"d":[true,false,null]}',
    b'{"":""}',
]
JSON_DECLINED = [
    b"",
    b"[]",
    b'"a"',
    b"1",
    b'{"a":01}',
    b'{"a":-01}',
    b'{"a":1.}',
    b'{"a":.5}',
    b'{"a":+1}',
    b'{"a":-}',
    b'{"a":1e}',
    b'{"a":1e+}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":tru}',
    b'{"a":True}',
    b'{"a":"\\ud800"}',  # lone surrogate escapes: the reference decides
    b'{"a":"\\udfff"}',
    b'{"a":"\\ud800x"}',
    b'{"a":1} ',  # whitespace after data: declined (msgspec accepts it)
    b'{"a":1}\t',
    b' {"a":1}',
    b'{"a":1,}',
    b'{"a":[1,]}',
    b'{,"a":1}',
    b'{"a":1}{}',
    b'{"a":1}}',
    b'{"a":1',
    b'{"a":"x',
    b'{"a":"\\',
    b'{"a":"\\u00e',
    b'{"a":"\\u12g4"}',
    b'{"a":"\\x"}',
    b'{"a":"\\U00e9"}',
    b'{"a":"\\a"}',
    b'{"a":"\x01"}',  # raw control characters in strings
    b'{"a":"\t"}',
    b'{"a":"\x1f"}',
    b'{"a\x00":1}',
    b"{a:1}",
    b"{'a':1}",
    b'{"a" 1}',
    b'{"a":1 "b":2}',
    b'{"a"}',
    b'{"a":}',
]


@pytest.mark.parametrize("data", JSON_ACCEPTED)
def test_json_object_ok_accepts(data):
    assert msgspec_accepts(data)
    assert _speedups.json_object_ok(data)


@pytest.mark.parametrize("data", JSON_DECLINED)
def test_json_object_ok_declines(data):
    assert not _speedups.json_object_ok(data)


def nested(depth: int) -> bytes:
    """An object holding arrays: ``depth`` containers in all."""
    return b'{"a":' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize("depth", [1, 2, 32, 63])
def test_json_object_ok_accepts_nesting(depth):
    assert msgspec_accepts(nested(depth))
    assert _speedups.json_object_ok(nested(depth))


def test_json_object_ok_takes_nesting_up_to_the_format_limit():
    # data itself is level 1 (format.MAX_DATA_DEPTH); deeper data the reference rejects
    limit = fmt.MAX_DATA_DEPTH
    assert _speedups.json_object_ok(nested(limit))
    assert _speedups.json_object_ok(b'{"a":' * (limit - 1) + b"{}" + b"}" * (limit - 1))


@pytest.mark.parametrize("beyond", [1, 2, 100, 1000, 100_000])
def test_json_object_ok_declines_deeper_nesting(beyond):
    depth = fmt.MAX_DATA_DEPTH + beyond
    assert not _speedups.json_object_ok(nested(depth))
    assert not _speedups.json_object_ok(b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1))


def test_json_object_ok_is_sound_on_every_targeted_case():
    for data in [*JSON_ACCEPTED, *JSON_DECLINED, *(nested(d) for d in range(1, fmt.MAX_DATA_DEPTH + 3))]:
        assert_json_sound(data)


# utf8_ok: exactly Python's strict decoder.


def decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


UTF8_VALID = [
    b"",
    b"ascii only",
    "é".encode(),
    "✓".encode(),
    "😀".encode(),
    b"\xc2\x80",  # U+0080, the first 2-byte
    b"\xdf\xbf",
    b"\xe0\xa0\x80",  # U+0800, the first 3-byte
    b"\xed\x9f\xbf",  # U+D7FF, just below the surrogates
    b"\xee\x80\x80",  # U+E000, just above
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",  # U+10000, the first 4-byte
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF, the last
]
UTF8_INVALID = [
    b"\x80",  # a lone continuation byte
    b"\xbf",
    b"\xc0\x80",  # overlongs
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",
    b"\xed\xa0\x80",  # surrogates
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf7\xbf\xbf\xbf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xc3",  # truncated at the end
    b"\xe2\x9c",
    b"\xf0\x9f\x98",
    b"\xc3(",  # a bad continuation
    b"\xe2(\x93",
    b"\xe2\x9c(",
    b"\xf0\x9f(\x80",
    b"\xf0\x9f\x98(",
]


@pytest.mark.parametrize("data", UTF8_VALID + UTF8_INVALID)
def test_utf8_ok_matches_python_at_every_position(data):
    # ASCII padding moves the sequence across the 8-byte fast path's words
    for before in range(18):
        for after in (b"", b"z", b"tail of ascii"):
            s = b"a" * before + data + after
            assert _speedups.utf8_ok(s) == decodes(s), s
    assert (data in UTF8_VALID) == _speedups.utf8_ok(data)


UTF8_PIECES = st.sampled_from([*UTF8_VALID, *UTF8_INVALID, b"a", b"abcdefgh", b"\x00", b"\x7f"])


@settings(max_examples=800, deadline=None)
@given(st.one_of(st.binary(max_size=64), st.lists(UTF8_PIECES, max_size=12).map(b"".join), TEXT.map(str.encode)))
def test_utf8_ok_matches_python(data):
    assert _speedups.utf8_ok(data) == decodes(data)


# ---- 2. differential scans -----------------------------------------------------------


def test_chunk_comparison_sees_every_field(tmp_path):
    """The comparison itself: a one-field change in a chunk is seen."""
    path = write(tmp_path / "s.ndjson", make_session(12, 5))
    base = scan_facts(path, 0, path.stat().st_size)
    assert base["lines"] == 13 and len(base["specials"]) == 4 and base["sealed_rel"] == 12
    for name in CHUNK_FIELDS:
        c = verify.scan_chunk(str(path), 0, path.stat().st_size)
        value = getattr(c, name)
        if name == "range":
            value.nodes[0] = (*value.nodes[0][:2], bytes(32))
        elif name == "specials":
            value[1].prev_chain = bytes(32)
        else:
            setattr(c, name, (value or 0) + 1 if isinstance(value, int) else ("x", value))
        assert chunk_facts(c) != base, name


def test_plain_session_accepted_by_the_helper(tmp_path):
    lines = make_session(60, 16)
    path = write(tmp_path / "s.ndjson", lines)
    pure, counting = assert_same_everywhere(path)
    assert pure["error"] is None and pure["lines"] == 61
    assert counting.accepted == 61 - 1 - 3 - 1  # all but line 0, the checkpoints (16, 32, 48), the seal
    assert verify.verify_file(path, KEYED).ok


@pytest.mark.parametrize("order", ["growing", "shrinking", "alternating"])
def test_every_line_length_mod_64_taken_by_the_helper(tmp_path, order):
    """scan() hashes leaves two lines at a time, as padded blocks: bodies of every length
    mod 64 (the padding spilling into a second block or not), next to longer, shorter
    and equal ones. sha256() does not reach that code; the exact count does."""
    body = {
        "growing": lambda seq: 300 + seq,
        "shrinking": lambda seq: 450 - seq,
        "alternating": lambda seq: 300 + (seq * 37 % 150 if seq % 2 else seq),
    }[order]
    lines = make_session(150, pad_of=lambda seq: padded_to(seq, body(seq) + fmt.TRAILER_LEN))
    assert [len(x) - 1 - fmt.TRAILER_LEN for x in lines[1:-1]] == [body(seq) for seq in range(1, 150)]
    pure, counting = assert_same_everywhere(write(tmp_path / "s.ndjson", lines))
    assert pure["error"] is None
    assert counting.accepted == 149


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33, 64, 65, 129])
def test_sessions_of_every_shape(tmp_path, size):
    # the compact range folds differently for each size; lines of many lengths mod 64
    lines = make_session(size, 5, pad_of=lambda seq: seq * 7 % 131)
    pure, counting = assert_same_everywhere(write(tmp_path / "s.ndjson", lines))
    assert pure["lines"] == size + 1
    assert counting.accepted == plain_lines_accepted(pure)


def test_unsealed_session_and_torn_tails(tmp_path):
    lines = make_session(30, 8, seal=False)
    data = b"".join(lines)
    for cut in range(1, len(lines[-1]) + 1):
        path = write(tmp_path / "s.ndjson", data[:-cut])
        pure, counting = assert_same_everywhere(path, (KEYED, ALLOW))
        assert pure["torn_bytes"] == len(lines[-1]) - cut
        assert counting.accepted == plain_lines_accepted(pure)


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.rglob("*.ndjson"))


def test_fixtures_present():
    names = {str(p.relative_to(FIXTURES)) for p in fixture_files()}
    assert {"sealed.ndjson", "torn-tail.ndjson", "unsealed.ndjson", "tamper/byte-flip.ndjson"} <= names
    assert any(n.startswith("multi/") for n in names)


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_both_ways(path):
    pure, counting = assert_same_everywhere(path, (KEYED, ALLOW, UNKEYED))
    assert counting.accepted == plain_lines_accepted(pure)
    if pure["lines"] > 12:
        assert counting.accepted > 0


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_chunks_from_every_line(path):
    data = path.read_bytes()
    starts = [i + 1 for i, b in enumerate(data) if b == 0x0A and i + 1 < len(data)]
    accepted = 0
    for start in starts:
        with_c, pure, counting = both_ways(scan_facts, path, start, len(data))
        assert_same(f"scan_chunk({path.name}, {start}, {len(data)})", with_c, pure)
        assert counting.accepted == plain_lines_accepted(pure), start
        accepted += counting.accepted
    assert accepted > 0


def test_sealed_fixture_chunks_between_every_two_lines():
    path = FIXTURES / "sealed.ndjson"
    data = path.read_bytes()
    bounds = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A]
    for i, start in enumerate(bounds):
        for end in bounds[i + 1 :]:
            with_c, pure, counting = both_ways(scan_facts, path, start, end)
            assert_same(f"scan_chunk(sealed.ndjson, {start}, {end})", with_c, pure)
            assert counting.accepted == plain_lines_accepted(pure), (start, end)


def test_sealed_fixture_chunks_from_inside_lines():
    # start not at a line boundary: the prev chain read from there is garbage
    path = FIXTURES / "sealed.ndjson"
    size = path.stat().st_size
    for start in range(1, size, 97):
        with_c, pure, _ = both_ways(scan_facts, path, start, size)
        assert_same(f"scan_chunk(sealed.ndjson, {start}, {size})", with_c, pure)


def test_multi_namespace_directory_both_ways():
    def path_facts():
        return [report_facts(r) for r in verify.verify_path([FIXTURES / "multi"], KEYED).files]

    with_c, pure, counting = both_ways(path_facts)
    assert_same("verify_path(multi)", with_c, pure)
    assert all(f["first_error"] is None for f in pure)
    assert counting.accepted > 0


# Correctly chained lines of arbitrary content: the only way past the chain check, so
# the only way to reach what the helper decides after it (shape, JSON, UTF-8, the fold).

TS_OK = b"2026-11-23T20:00:01.001234Z"
KINDS = [
    b"conn.anomaly",
    b"x",
    b"tls/handshake:v2",
    "é✓".encode(),
    b"\x7f",
    b"conn\\/anomaly",
    b"a\\u0000b",
    b"\\u0073ession.sealed",
    b"\\u006cedger.checkpoint",
    b"ledger.checkpoint",
    b"session.sealed",
    b"session.opened",
    b"a\x01",
    b"a\tb",
    b"",
    b"\xff",
    b"\xed\xa0\x80",
]


TS_FORMS = [TS_OK] * 8 + [b"2026-11-23T20:00:01.00123Z", b"2026-11-23 20:00:01.001234Z", b"2026-11-23T20:00:01.001234z"]


def seq_forms(seq: int) -> list[bytes]:
    return [b"%d" % seq] * 8 + [b"0%d" % seq, b"%d" % (seq + 1), b"-%d" % seq, b"0", b"%d " % seq]


@st.composite
def events(draw, seq: int) -> bytes:
    """E_seq, mostly in shape, sometimes not in one header field or in data."""
    v = draw(st.sampled_from([b"1"] * 8 + [b"2", b"1.0"]))
    seq_b = draw(st.sampled_from(seq_forms(seq)))
    ts_b = draw(st.sampled_from(TS_FORMS))
    kind = draw(st.sampled_from(KINDS[:3] * 4 + KINDS))
    data = draw(st.one_of(COMPACT_OBJECTS, COMPACT_OBJECTS, mutated_objects(), JSON_ISH.map(lambda b: b"{" + b)))
    return b'{"v":%b,"seq":%b,"ts":"%b","kind":"%b","data":%b}' % (v, seq_b, ts_b, kind, data)


@st.composite
def chained_sessions(draw) -> bytes:
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0))]
    for seq in range(1, draw(st.integers(1, 8)) + 1):
        what = draw(st.sampled_from(["event", "event", "event", "plain", "checkpoint"]))
        if what == "event":
            lines.append(append_raw(b, draw(events(seq))))
        elif what == "plain":
            lines.append(b.line("conn.anomaly", data_of(seq), ts(seq)))
        else:
            lines.append(b.checkpoint_line(ts(seq)))
    ending = draw(st.sampled_from(["seal", "none", "torn", "after-seal"]))
    if ending in ("seal", "after-seal"):
        lines.append(b.seal_line(ts(99), "closed", 0))
    if ending == "torn":
        lines.append(b.line("conn.anomaly", data_of(99), ts(99))[:-7])
    if ending == "after-seal":
        lines.append(append_raw(b, fmt.encode_event(b.size, TS_OK.decode(), "conn.anomaly", b"{}")))
    return b"".join(lines)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speedups") / "s.ndjson"


@settings(max_examples=100, deadline=None)
@given(chained_sessions())
def test_chained_lines_of_arbitrary_content_both_ways(scratch, data):
    write(scratch, data)
    with_c, pure, _ = both_ways(scan_facts, scratch, 0, len(data))
    assert_same(f"scan_chunk of {data!r}", with_c, pure)
    c_report, pure_report, _ = both_ways(file_facts, scratch, ALLOW)
    assert_same(f"verify_file of {data!r}", c_report, pure_report)


# One piece of text (valid or not) at each place a non-ASCII byte, an escape or a control
# character may stand in a line, at offsets across the helper's 16-byte string windows.

STRING_PIECES = [
    *((piece, None) for piece in UTF8_VALID[1:]),
    (b'\\"', None),
    (b"\\\\", None),
    (b"\\u00e9", None),
    (b"\x7f", None),
    *((piece, "not_utf8") for piece in UTF8_INVALID),
    (b"\x01", "malformed"),
    (b"\x1f", "malformed"),
    (b"\t", "malformed"),
    (b"\\ud83d\\ude00", None),  # surrogate escapes: the helper leaves them to the reference
    (b"\\ud800", "malformed"),
    (b"\\udc00", "malformed"),
]


def data_with(piece: bytes, where: str, offset: int) -> bytes:
    pad = b"x" * offset
    if where == "value":
        return b'{"a":"' + pad + piece + b'yyy","b":1}'
    return b'{"' + pad + piece + b'":1}'


@pytest.mark.parametrize(("piece", "reason"), STRING_PIECES, ids=lambda v: repr(v) if isinstance(v, bytes) else None)
def test_text_at_every_offset_of_a_chained_line(scratch, piece, reason):
    places = [("value", n) for n in range(20)] + [("key", n) for n in range(0, 17, 4)] + [("kind", 0)]
    for where, offset in places:
        b = SessionBuilder(NS, SID, [KEY])
        lines = [b.opened_line(ts(0)), b.line("conn.anomaly", data_of(1), ts(1))]
        if where == "kind":
            event = fmt.encode_event(2, ts(2), "k", b'{"a":1}').replace(b'"kind":"k"', b'"kind":"k' + piece + b'"')
        else:
            event = fmt.encode_event(2, ts(2), "conn.anomaly", data_with(piece, where, offset))
        lines += [append_raw(b, event), b.line("conn.anomaly", data_of(3), ts(3)), b.seal_line(ts(4), "closed", 0)]
        size = write(scratch, lines).stat().st_size
        with_c, pure, counting = both_ways(scan_facts, scratch, 0, size)
        assert_same(f"{piece!r} in the {where} at offset {offset}", with_c, pure)
        if where == "kind":
            continue  # an escape there is the reference's; a control makes the header fail
        error = pure["error"] and pure["error"][2]
        assert error == reason, (where, offset)
        taken = 3 if reason is None and b"\\ud" not in piece else 2 if reason is None else 1
        assert counting.accepted == taken, (where, offset)


def test_lines_the_helper_declines_but_the_reference_accepts(tmp_path):
    """Whitespace after data, an escaped kind, a surrogate pair: all valid, all left to
    the reference, and the file verifies the same both ways."""
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0))]
    odd = [
        (b"conn.anomaly", b'{"a":1} '),
        (b"conn\\/anomaly", b'{"a":1}'),
        (b"conn.anomaly", b'{"a":"\\ud83d\\ude00"}'),
        (b"conn.anomaly", b'{ "a" : [ 1 , 2 ] }\r'),
        (b"conn.anomaly", b'{"a":1}\t'),
    ]
    for kind, data in odd:
        event = b'{"v":1,"seq":%d,"ts":"%b","kind":"%b","data":%b}' % (b.size, TS_OK, kind, data)
        lines.append(append_raw(b, event))
        lines.append(b.line("conn.anomaly", data_of(b.size), ts(b.size)))
    lines.append(b.seal_line(ts(99), "closed", 0))
    path = write(tmp_path / "s.ndjson", lines)
    pure, counting = assert_same_everywhere(path)
    assert pure["error"] is None and pure["lines"] == len(lines)
    assert verify.verify_file(path, KEYED).ok
    # the helper goes on after each declined line: it takes at least the plain ones between
    assert counting.accepted >= len(odd)


@pytest.mark.parametrize("beyond", [-1, 0, 1, 2, 1000, 20_000])
def test_nesting_at_the_limit_both_ways(scratch, beyond):
    depth = fmt.MAX_DATA_DEPTH + beyond
    for data in (nested(depth), b'{"a":' * (depth - 1) + b'{"s":"[{"}' + b"}" * (depth - 1)):
        b = SessionBuilder(NS, SID, [KEY])
        lines = [b.opened_line(ts(0)), b.line("conn.anomaly", data_of(1), ts(1))]
        lines += [b.line("conn.anomaly", data, ts(2)), b.line("conn.anomaly", data_of(3), ts(3))]
        size = write(scratch, lines).stat().st_size
        with_c, pure, counting = both_ways(scan_facts, scratch, 0, size)
        assert_same(f"data nested {depth} deep", with_c, pure)
        if beyond <= 0:
            assert pure["error"] is None and counting.accepted == 3
        else:
            assert pure["error"][:3] == (2, 2, "malformed") and counting.accepted == 1


# Every byte of a small session changed, a few ways.

TAMPER_VALUES = (0x01, 0x20, 0x80)  # XORed
TAMPER_BYTES = (ord('"'), ord("\\"), ord("\n"), 0xFF)  # written in


def tamper_session() -> list[bytes]:
    """12 lines: opened, five events, a checkpoint, four events (one with an escaped
    kind), the seal; data with non-ASCII text and escaped strings."""
    return make_session(11, 6, kind_of=lambda seq: "conn\\/anomaly" if seq == 9 else "conn.anomaly")


def verdict(path: Path, policy: Policy) -> tuple[dict, list[dict]]:
    """verify_file's report and the chunks its scan produced (one, for a small file)."""
    chunks: list[dict] = []
    real = verify.scan_chunk

    def spy(*args):
        c = real(*args)
        chunks.append(chunk_facts(c))
        return c

    with patched(verify_parallel, "scan_chunk", spy):
        report = verify.verify_file(path, policy)
    return report_facts(report), chunks


def test_every_byte_changed_both_ways(tmp_path, monkeypatch):
    lines = tamper_session()
    data = b"".join(lines)
    assert len(lines) == 12 and b"\\/" in lines[9] and "ü".encode() in data and b'\\"' in data
    # smaller read blocks than 4 MiB only to save allocating one per call: one block either way
    monkeypatch.setattr(verify_scan, "BLOCK_SIZE", 1 << 16)
    path = write(tmp_path / "s.ndjson", data)
    _, pure, counting = both_ways(verdict, path, KEYED)
    assert pure[0]["first_error"] is None
    assert counting.accepted == 12 - 4  # not line 0, the checkpoint, the escaped kind, the seal
    tried = accepted = 0
    fd = os.open(path, os.O_WRONLY)  # one byte written in place: rewriting the file costs more
    try:
        for offset, byte in enumerate(data):
            for new in sorted({byte ^ x for x in TAMPER_VALUES} | set(TAMPER_BYTES) - {byte}):
                os.pwrite(fd, bytes([new]), offset)
                with_c, pure, counting = both_ways(verdict, path, KEYED)
                where = f"byte {offset} ({byte:#04x} -> {new:#04x})"
                assert_same(where, with_c, pure)
                # every line before the changed one is intact: the helper takes the plain ones
                assert counting.accepted == plain_lines_accepted(pure[1][0], escaped_kinds=(9,)), where
                tried += 1
                accepted += counting.accepted
            os.pwrite(fd, bytes([byte]), offset)
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    assert tried >= 6 * len(data)
    assert accepted > tried  # the helper took lines around the change, on average more than one


# Read blocks, torn tails and the line length limit.


@pytest.fixture(scope="module")
def long_session() -> list[bytes]:
    """200 lines of every length mod 64, checkpoints every 50, sealed."""
    return make_session(199, 50, pad_of=lambda seq: seq * 13 % 200)


def both_ways_with(path: Path, policy: Policy) -> tuple[dict, dict]:
    """Chunk and report facts; C and reference must agree, and the helper takes every
    plain line the reference accepted. Returns the reference's."""
    size = path.stat().st_size
    with_c, pure, counting = both_ways(scan_facts, path, 0, size)
    assert_same(f"scan_chunk({path.name}) with BLOCK_SIZE {verify_scan.BLOCK_SIZE}", with_c, pure)
    assert counting.accepted == plain_lines_accepted(pure), f"BLOCK_SIZE {verify_scan.BLOCK_SIZE}"
    c_report, pure_report, _ = both_ways(file_facts, path, policy)
    assert_same(f"verify_file({path.name}) with BLOCK_SIZE {verify_scan.BLOCK_SIZE}", c_report, pure_report)
    return pure, pure_report


BLOCK_SIZES = [1, 7, 100, 300, 4096]


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_small_read_blocks(tmp_path, monkeypatch, long_session, block):
    path = write(tmp_path / "s.ndjson", long_session)
    reference = both_ways_with(path, KEYED)  # at the default block size
    monkeypatch.setattr(verify_scan, "BLOCK_SIZE", block)
    assert both_ways_with(path, KEYED) == reference
    assert reference[1]["first_error"] is None and reference[1]["events"] == 200


@pytest.mark.parametrize("block", BLOCK_SIZES)
def test_small_read_blocks_torn_tail(tmp_path, monkeypatch, long_session, block):
    torn = long_session[:120] + [long_session[120][:-40]]
    path = write(tmp_path / "s.ndjson", torn)
    reference = both_ways_with(path, ALLOW)
    monkeypatch.setattr(verify_scan, "BLOCK_SIZE", block)
    assert both_ways_with(path, ALLOW) == reference
    assert reference[0]["torn_bytes"] == len(long_session[120]) - 40
    assert reference[1]["first_error"] is None and reference[1]["events"] == 120


MAX_LINE = 2000


def padded_to(seq: int, length: int) -> int:
    """The pad that makes line ``seq`` of make_session exactly ``length`` bytes without its LF."""
    event = fmt.encode_event(seq, ts(seq), "conn.anomaly", data_of(seq, 0))
    return length - (len(event) - 1 + fmt.TRAILER_LEN)


@pytest.mark.parametrize("block", [None, *BLOCK_SIZES])
@pytest.mark.parametrize(
    ("case", "line", "reason"),
    [
        ("long-line", 111, "line_too_long"),  # seq 110 is 3000 bytes
        ("limit-plus-one", 111, "line_too_long"),  # seq 110 is 2001 bytes
        ("at-limit", None, None),  # seq 110 is 2000 bytes: fine
        ("long-torn-tail", 121, "line_too_long"),  # 120 lines, then 2500 bytes without LF
        ("torn-tail-at-limit", None, None),  # 120 lines, then 2000 bytes without LF
        ("long-line-after-bad", 61, "chain_mismatch"),  # the first error wins
    ],
)
def test_line_length_limit(tmp_path, monkeypatch, block, case, line, reason):
    monkeypatch.setattr(fmt, "MAX_LINE_BYTES", MAX_LINE)
    lengths = {"long-line": 3000, "limit-plus-one": MAX_LINE + 1, "at-limit": MAX_LINE, "long-line-after-bad": 3000}
    lines = make_session(199, 50, pad_of=lambda seq: padded_to(seq, lengths.get(case, 0)) if seq == 110 else seq % 90)
    if case == "long-line-after-bad":
        lines[60] = lines[60].replace(b'"cn":"client-', b'"cn":"CLIENT-')
    if case == "long-torn-tail":
        lines = lines[:120] + [b"{" + b"x" * 2499]
    if case == "torn-tail-at-limit":
        lines = lines[:120] + [b"{" + b"x" * (MAX_LINE - 1)]
    if case in lengths:
        assert len(lines[110]) - 1 == lengths[case]
    assert all(len(x) - 1 <= MAX_LINE for i, x in enumerate(lines) if i != 110 and x.endswith(b"\n"))
    path = write(tmp_path / "s.ndjson", lines)
    if block is not None:
        monkeypatch.setattr(verify_scan, "BLOCK_SIZE", block)
    chunk, report = both_ways_with(path, ALLOW)
    e = report["first_error"]
    assert (e and (e["line"], e["reason"])) == ((line, reason) if reason else None), e
    if reason is not None:
        assert chunk["error"][:3] == (line - 1, line - 1, reason)
        assert chunk["lines"] == line - 1
    if case == "torn-tail-at-limit":
        assert report["torn_tail_bytes"] == MAX_LINE


# gzip streams, and the parallel path.


class Trickle:
    """A stream with read() alone that hands back at most ``most`` bytes per call."""

    def __init__(self, stream, most: int) -> None:
        self.stream = stream
        self.most = most

    def read(self, n: int) -> bytes:
        return self.stream.read(min(n, self.most))


def stream_facts(gz: bytes, policy: Policy, most: int | None) -> dict:
    """The report on a gzip stream. ``bytes`` counts what was read: all of it, except
    after an error, where it depends on the read sizes (and no caller uses it)."""
    stream = gzip.GzipFile(fileobj=io.BytesIO(gz))
    facts = report_facts(verify.verify_stream(stream if most is None else Trickle(stream, most), "s.ndjson", policy))
    if facts["first_error"] is not None:
        del facts["bytes"]
    return facts


@pytest.mark.parametrize("most", [None, 5, 333])
@pytest.mark.parametrize("shape", ["sealed", "torn", "tampered", "after-seal"])
def test_gzip_stream_both_ways(tmp_path, long_session, most, shape):
    lines = list(long_session)
    if shape == "torn":
        lines = lines[:150] + [lines[150][:99]]
    if shape == "tampered":
        lines[77] = lines[77].replace(b'"i":77', b'"i":78')
    if shape == "after-seal":
        lines.append(lines[5])
    data = b"".join(lines)
    gz = gzip.compress(data)
    with_c, pure, counting = both_ways(stream_facts, gz, ALLOW, most)
    assert_same(f"verify_stream({shape}, {most})", with_c, pure)
    specials = [0, 50, 100, 150, 199]  # opened, checkpoints, the seal: the reference's lines
    assert counting.accepted == pure["events"] - sum(seq < pure["events"] for seq in specials)
    # and the same report as the file itself
    path = write(tmp_path / "s.ndjson", data)
    file_report = report_facts(verify.verify_file(path, ALLOW)) | {"path": "s.ndjson"}
    if shape in ("tampered", "after-seal"):
        assert pure["first_error"] is not None
        del file_report["bytes"]
    assert pure == file_report


@pytest.mark.parametrize("shape", ["sealed", "tampered", "torn"])
def test_parallel_chunks_both_ways(tmp_path, monkeypatch, long_session, shape):
    # with the helper, chunks are scanned in threads; without it, in worker processes
    monkeypatch.setattr(verify_parallel, "PARALLEL_MIN_BYTES", 4096)
    lines = list(long_session)
    if shape == "tampered":
        lines[120] = lines[120].replace(b'"i":120', b'"i":121')
    if shape == "torn":
        lines = lines[:180] + [lines[180][:50]]
    path = write(tmp_path / "s.ndjson", lines)
    serial = None
    for jobs in (1, 3):
        with_c, pure, _ = both_ways(file_facts, path, Policy(keys=(KEY,), allow_unsealed=True, jobs=jobs))
        assert_same(f"verify_file(jobs={jobs})", with_c, pure)
        serial = serial or pure
        assert pure == serial
    e = serial["first_error"]
    assert {"sealed": None, "tampered": (121, "chain_mismatch"), "torn": None}[shape] == (
        e and (e["line"], e["reason"])
    )


# ---- 3. the helper really is used ---------------------------------------------------


def after_line_0(lines: list[bytes], first: int = 0) -> verify._Scan:
    """The scan state after the reference took line ``first`` (a chunk starting there)."""
    prev = fmt.ZERO_CHAIN if first == 0 else bytes.fromhex(fmt.chain_of_line(lines[first - 1]))
    st = verify._Scan(prev, first == 0)
    out = verify._Chunk()
    verify._scan_lines((lines[first][:-1],), st, out)
    assert out.error is None and st.index == first + 1
    return st


def reference_state(lines: list[bytes], first: int, stop: int) -> verify._Scan:
    """The scan state after the reference alone took lines [first, stop)."""
    prev = fmt.ZERO_CHAIN if first == 0 else bytes.fromhex(fmt.chain_of_line(lines[first - 1]))
    st = verify._Scan(prev, first == 0)
    out = verify._Chunk()
    verify._scan_lines([x[:-1] for x in lines[first:stop]], st, out)
    assert out.error is None
    return st


def call_scan(buf, pos: int, st: verify._Scan, **change):
    args = {"prev": st.prev, "index": st.index, "begin": st.begin, "max_line": fmt.MAX_LINE_BYTES} | change
    return _speedups.scan(buf, pos, len(buf), args["prev"], args["index"], args["begin"], st.stack, args["max_line"])


def test_scan_accepts_every_plain_line_up_to_the_first_checkpoint():
    lines = make_session(60, 40, pad_of=lambda seq: seq * 5 % 70)
    buf = b"".join(lines)
    st = after_line_0(lines)
    stack = st.stack
    pos, count, chain = call_scan(buf, len(lines[0]), st)
    assert count == 39  # seq 1..39; seq 40 is the checkpoint
    assert pos == line_starts(lines)[40]
    assert chain == bytes.fromhex(fmt.chain_of_line(lines[39]))
    assert st.stack is stack  # updated in place ...
    assert stack == reference_state(lines, 0, 40).stack  # ... to the reference's subtrees


def test_scan_fold_matches_the_reference_from_any_first_leaf():
    lines = make_session(70, 64)
    buf = b"".join(lines)
    starts = line_starts(lines)
    for first in range(1, 63):
        st = after_line_0(lines, first)
        pos, count, chain = call_scan(buf, starts[first + 1], st)
        assert (pos, count) == (starts[64], 63 - first), first
        assert chain == bytes.fromhex(fmt.chain_of_line(lines[63]))
        ref = reference_state(lines, first, 64)
        assert (st.stack, st.begin) == (ref.stack, first), first


def test_scan_stops_at_a_line_without_its_lf():
    lines = make_session(20)
    buf = bytearray(b"".join(lines[:10]) + lines[10][:-1])
    st = after_line_0(lines)
    pos, count, chain = call_scan(buf, len(lines[0]), st)
    assert (pos, count) == (line_starts(lines)[10], 9)
    assert chain == bytes.fromhex(fmt.chain_of_line(lines[9]))


def declined(buf: bytes, pos: int, st: verify._Scan, **change) -> bool:
    """scan() took nothing at ``pos`` and left the state as it was."""
    before = list(st.stack)
    got_pos, count, chain = call_scan(buf, pos, st, **change)
    return (got_pos, count, chain, st.stack) == (pos, 0, change.get("prev", st.prev), before)


def test_scan_declines_a_backslash_in_kind():
    lines = make_session(20, kind_of=lambda seq: "conn\\/anomaly" if seq == 5 else "conn.anomaly")
    buf = b"".join(lines)
    starts = line_starts(lines)
    st = after_line_0(lines)
    assert call_scan(buf, starts[1], st)[:2] == (starts[5], 4)  # stops there
    st = reference_state(lines, 0, 5)
    assert declined(buf, starts[5], st)
    st = reference_state(lines, 0, 6)  # the reference accepts it, and the helper goes on
    assert call_scan(buf, starts[6], st)[:2] == (starts[20], 14)


def test_scan_declines_a_seq_mismatch():
    lines = make_session(20)
    buf = b"".join(lines)
    starts = line_starts(lines)
    st = reference_state(lines, 0, 5)
    assert declined(buf, starts[5], st, index=6)
    assert declined(buf, starts[5], st, index=4)
    assert declined(buf, starts[6], st)  # line 6 holds seq 6, 5 expected


def test_scan_declines_special_kinds():
    lines = make_session(20, 8)
    buf = b"".join(lines)
    starts = line_starts(lines)
    for seq in (8, 16, 20):  # two checkpoints, the seal
        st = reference_state(lines, 0, seq)
        assert declined(buf, starts[seq], st), seq
    # a second session.opened, correctly chained: the reference rejects it
    b = SessionBuilder(NS, SID, [KEY])
    more = [b.opened_line(ts(0)), b.line("conn.anomaly", b"{}", ts(1)), b.line("session.opened", b"{}", ts(2))]
    st = reference_state(more, 0, 2)
    assert declined(b"".join(more), line_starts(more)[2], st)


def test_scan_declines_a_wrong_chain_and_an_overlong_line():
    lines = make_session(20)
    buf = b"".join(lines)
    starts = line_starts(lines)
    st = reference_state(lines, 0, 5)
    assert declined(buf, starts[5], st, prev=bytes(32))
    n = len(lines[5]) - 1
    assert declined(buf, starts[5], st, max_line=n - 1)
    assert call_scan(buf, starts[5], st, max_line=n)[1] >= 1  # exactly the limit is fine


def test_scan_declines_whitespace_after_data_that_the_reference_accepts():
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0)), append_raw(b, fmt.encode_event(1, ts(1), "conn.anomaly", b'{"a":1} '))]
    st = after_line_0(lines)
    assert declined(b"".join(lines), len(lines[0]), st)
    assert reference_state(lines, 0, 2).lines == 2


def test_scan_rejects_a_bad_state():
    lines = make_session(5)
    buf = b"".join(lines)
    st = after_line_0(lines)
    with pytest.raises(ValueError):
        call_scan(buf, len(lines[0]), st, index=0)
    with pytest.raises(ValueError):
        call_scan(buf, len(lines[0]), st, prev=bytes(31))
    with pytest.raises(ValueError):
        call_scan(buf, len(lines[0]), st, begin=-1)
    with pytest.raises(ValueError):
        _speedups.scan(buf, 0, len(buf) + 1, st.prev, st.index, st.begin, st.stack, fmt.MAX_LINE_BYTES)
    with pytest.raises(ValueError):
        _speedups.scan(buf, len(lines[0]), len(buf), st.prev, st.index, st.begin, [b"short"], fmt.MAX_LINE_BYTES)


# ---- 4. the environment switches ----------------------------------------------------

PORTABLE_CHECK = """
import hashlib, json, random, sys
from ledger import _speedups, verify

assert _speedups.SHA256_IMPL == "portable", _speedups.SHA256_IMPL
lengths = [*range(301), *(64 * k + d for k in range(1, 40) for d in (-9, -8, -1, 0, 1, 55, 56)), 3 * 2**20 + 5]
for n in lengths:
    data = random.Random(n).randbytes(n)
    assert _speedups.sha256(data) == hashlib.sha256(data).digest(), n
accepted = 0
real = _speedups.scan

class Counting:
    @staticmethod
    def scan(*args):
        global accepted
        pos, count, chain = real(*args)
        accepted += count
        return pos, count, chain

verify.scan._speedups = Counting
c = verify.scan_chunk(sys.argv[1], 0, int(sys.argv[2]))
print(json.dumps({"accepted": accepted, "lines": c.lines, "error": c.error, "last_chain": c.last_chain.hex(),
                  "nodes": [[lv, i, h.hex()] for lv, i, h in c.range.nodes]}))
"""


def test_portable_sha256_in_a_fresh_interpreter(tmp_path):
    """LEDGER_PORTABLE_SHA256=1 keeps the portable SHA-256 (and its two-message variant)
    on a CPU with the SHA extensions: the same hashes, the same scan."""
    lines = make_session(150, 40, pad_of=lambda seq: padded_to(seq, 300 + seq + fmt.TRAILER_LEN))
    path = write(tmp_path / "s.ndjson", lines)
    size = path.stat().st_size
    got = json.loads(fresh_python(PORTABLE_CHECK, str(path), str(size), LEDGER_PORTABLE_SHA256="1"))
    with helper(None):
        pure = scan_facts(path, 0, size)
    assert got["error"] is None and pure["error"] is None
    assert got["lines"] == pure["lines"] == 151
    assert got["last_chain"] == pure["last_chain"].hex()
    assert got["nodes"] == [[lv, i, h.hex()] for lv, i, h in pure["range"][2]]
    assert got["accepted"] == plain_lines_accepted(pure) == 151 - 1 - 3 - 1


def fresh_python(code: str, *args: str, **env: str) -> str:
    """stdout of ``code`` run by a new interpreter, LEDGER_PURE_PYTHON unset unless given in ``env``."""
    base = {k: v for k, v in os.environ.items() if k != "LEDGER_PURE_PYTHON"}
    p = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=base | env,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def helper_in_fresh_interpreter(pure: str | None) -> str:
    env = {} if pure is None else {"LEDGER_PURE_PYTHON": pure}
    return fresh_python("import ledger.verify as v; print(v._speedups is None)", **env).strip()


def test_pure_python_env_turns_the_helper_off():
    assert helper_in_fresh_interpreter("1") == "True"
    assert helper_in_fresh_interpreter(None) == "False"


# ---- reasons as SPEC section 5 names them ------------------------------------------------


@pytest.mark.parametrize(
    "where",
    [
        b'{"note":"bad \xff byte"}',  # inside a string of data
        b'{"n\xc3":"key"}',  # a truncated sequence inside a key
        b'{"a":["\xed\xa0\x80"]}',  # a surrogate, in a nested string
        b'{"a":"\xff",}',  # and the JSON is bad too: UTF-8 is step 1, shape step 2
        b'{"a":"\xff}',  # an unterminated string
        b'{"a":"\x01\xff"}',  # a raw control character in the same string
        b'{"a":' + b"[" * 200 + b'"\xff"' + b"]" * 200 + b"}",  # nested past the limit
    ],
)
def test_bad_utf8_inside_a_json_string_is_not_utf8_both_ways(tmp_path, where):
    """A bad UTF-8 byte inside a JSON string is `not_utf8` (SPEC 5 step 1 comes before the
    shape of step 2), never `malformed`, with the C helper and the reference alike."""
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(ts(0)), b.line("conn.anomaly", data_of(1), ts(1))]
    event = b'{"v":1,"seq":2,"ts":"' + ts(2).encode() + b'","kind":"conn.anomaly","data":' + where + b"}"
    lines.append(append_raw(b, event))
    lines.append(b.line("conn.anomaly", data_of(3), ts(3)))
    path = write(tmp_path / "s.ndjson", lines)
    pure, _ = assert_same_everywhere(path)
    assert pure["error"][2] == "not_utf8", pure["error"]
    report = verify.verify_file(path, KEYED)
    assert (report.first_error.line, report.first_error.reason) == (3, "not_utf8")
