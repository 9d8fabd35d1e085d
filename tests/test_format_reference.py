"""``format.encode_event``, ``next_chain`` and ``make_line`` are the readable reference
of a line (SPEC.md 2.2-2.3); ``SessionBuilder.line`` inlines them for speed. This
checks that the two write the same bytes, for every kind of line (opened, ordinary,
checkpoint, seal) and for data with unicode, escapes and deep nesting.

The reference session below is written from the format module alone: its own list
of leaves, ``merkle.root`` over them, the checkpoint data from ``build_checkpoint``.
"""

from __future__ import annotations

import functools
import hashlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import format as fmt
from ledger import merkle
from ledger.session import SessionBuilder

NAMESPACE = "edge-1.eu"
SESSION = "20261201T070000.000000Z-0badc0de"
KEYS = [b"k" * 32, b"another key of thirty-two bytes!"]
NOW = 1_796_000_000.25
PREV = fmt.PrevLink(session="20261130T070000.000000Z-00000001", size=7, root="ab" * 32, chain="cd" * 32)


def _signer(text: bytes, now: float) -> dict:
    """A deterministic stand-in for a note or ratchet signer: same text, same signature."""
    return {"alg": "test", "key": "t", "sig": hashlib.sha256(text + str(now).encode()).hexdigest()}


class Reference:
    """A session written with the reference functions, one step at a time."""

    def __init__(self, prev: fmt.PrevLink | None = None, extra: dict | None = None) -> None:
        self.origin = fmt.origin_of(NAMESPACE, SESSION)
        self.prev = prev
        self.extra = extra or {}
        self.leaves: list[bytes] = []
        self.chain = fmt.ZERO_CHAIN

    def line(self, kind: str, data_json: bytes, ts: str) -> bytes:
        event = fmt.encode_event(len(self.leaves), ts, kind, data_json)
        leaf = merkle.leaf_hash(event)
        self.chain = fmt.next_chain(self.chain, leaf)
        self.leaves.append(leaf)
        return fmt.make_line(event, self.chain)

    def opened(self, ts: str) -> bytes:
        prev = msgspec.structs.asdict(self.prev) if self.prev else None
        data = {"session": SESSION, "origin": self.origin, "prev": prev, **self.extra}
        return self.line(fmt.KIND_OPENED, msgspec.json.encode(data), ts)

    def _signed(self, seal: tuple | None) -> dict:
        root = merkle.root(self.leaves)
        return fmt.build_checkpoint(self.origin, len(self.leaves), root, self.chain, KEYS, [_signer], NOW, seal=seal)

    def checkpoint(self, ts: str, dropped: dict[str, int] | None) -> bytes:
        data = self._signed(None)
        if dropped is not None:
            data["dropped"] = dropped
        return self.line(fmt.KIND_CHECKPOINT, msgspec.json.encode(data), ts)

    def seal(self, ts: str, reason: str, dropped: dict[str, int] | int, **extra: object) -> bytes:
        data = self._signed((reason, dropped))
        data.update(extra)
        return self.line(fmt.KIND_SEALED, msgspec.json.encode(data), ts)


def _builder(prev: fmt.PrevLink | None = None, extra: dict | None = None) -> SessionBuilder:
    return SessionBuilder(NAMESPACE, SESSION, KEYS, prev=prev, opened_extra=extra, signers=[_signer])


def _ts(i: int) -> str:
    return f"2026-12-01T07:00:{i % 60:02d}.{i:06d}Z"


# Data a JSON encoder may write in more than one way, or that a hand-written line
# could get wrong: escapes, non-ASCII, code points outside the BMP, deep nesting.
AWKWARD = [
    {},
    {"a": 1},
    {"text": 'quote " backslash \\ slash / newline \n tab \t nul \x00 bell \x07 del \x7f'},
    {"unicode": "é 日本語 Ελληνικά עברית 🔒 \u2028 \u2029 \ufeff", "ключ": "значение"},
    {"surrogate range": "\U0001f600\U0010ffff", "html": "</script><!-- & ' \"-->"},
    {"numbers": [0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, 1e-300, 1e300], "bools": [True, False, None]},
    {"nested": {"a": [{"b": [[[{"c": "deep"}]]]}], "empty": {"x": [], "y": {}}}},
    {"deep": functools.reduce(lambda inner, _: {"d": [inner]}, range(60), {"end": True})},
    {"": "empty key", " ": "space key", "k" * 300: "v" * 5000},
]
KINDS = ["conn.anomaly", "capture.started", "a", "A0_.:/-z", "x" * 128]


def _same_session(pairs: list[tuple[bytes, bytes]]) -> None:
    for i, (built, reference) in enumerate(pairs):
        assert built == reference, f"line {i + 1} differs"


def test_every_kind_of_line_matches_the_reference():
    b, r = _builder(PREV, {"host": "edge-1", "ü": "ß"}), Reference(PREV, {"host": "edge-1", "ü": "ß"})
    pairs = [(b.opened_line(_ts(0)), r.opened(_ts(0)))]
    for i, data in enumerate(AWKWARD, start=1):
        data_json = msgspec.json.encode(data)
        kind = KINDS[i % len(KINDS)]
        pairs.append((b.line(kind, data_json, _ts(i)), r.line(kind, data_json, _ts(i))))
        if i % 3 == 0:
            dropped = {"queue_full": i} if i % 2 else None
            pairs.append((b.checkpoint_line(_ts(i), dropped, now=NOW), r.checkpoint(_ts(i), dropped)))
    ts = _ts(99)
    pairs.append((b.seal_line(ts, "shutdown", {"queue_full": 3}, now=NOW), r.seal(ts, "shutdown", {"queue_full": 3})))
    _same_session(pairs)
    assert b.tree.root() == merkle.root(r.leaves) and b.chain == r.chain
    assert [line[-1:] for line, _ in pairs] == [b"\n"] * len(pairs)


def test_first_session_and_a_seal_with_extra_fields():
    b, r = _builder(), Reference()
    pairs = [(b.opened_line(_ts(0)), r.opened(_ts(0)))]
    ts = _ts(1)
    pairs.append((b.seal_line(ts, "rotate", 0, now=NOW, torn_bytes=17), r.seal(ts, "rotate", 0, torn_bytes=17)))
    _same_session(pairs)


def test_a_timestamp_given_as_bytes_writes_the_same_line():
    b, r = _builder(), Reference()
    b.opened_line(_ts(0))
    r.opened(_ts(0))
    assert b.line("conn.anomaly", b'{"x":"\\u00e9"}', _ts(1).encode()) == r.line(
        "conn.anomaly", b'{"x":"\\u00e9"}', _ts(1)
    )


@pytest.mark.parametrize("data_json", [b"{}", b'{"a" : 1 }', b'{"b":"\\ud83d\\ude00"}', b'{"c":"\\/"}'])
def test_data_is_written_as_given_not_re_encoded(data_json):
    """Hashes are over the bytes as written: data the builder did not encode itself
    (spaces, escaped surrogate pairs, an escaped slash) goes into the line unchanged."""
    b, r = _builder(), Reference()
    b.opened_line(_ts(0))
    r.opened(_ts(0))
    line = b.line("k", data_json, _ts(1))
    assert line == r.line("k", data_json, _ts(1))
    assert b'"data":' + data_json + b',"chain":"' in line


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
EVENTS = st.lists(
    st.tuples(st.sampled_from(KINDS), st.dictionaries(st.text(max_size=12), JSON, max_size=5), st.booleans()),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(events=EVENTS, reason=st.sampled_from(["shutdown", "rotate", "a_b"]))
def test_generated_sessions_match_the_reference(events, reason):
    b, r = _builder(PREV), Reference(PREV)
    pairs = [(b.opened_line(_ts(0)), r.opened(_ts(0)))]
    for i, (kind, data, checkpoint_after) in enumerate(events, start=1):
        data_json = msgspec.json.encode(data)
        pairs.append((b.line(kind, data_json, _ts(i)), r.line(kind, data_json, _ts(i))))
        if checkpoint_after:
            pairs.append((b.checkpoint_line(_ts(i), {"x": i}, now=NOW), r.checkpoint(_ts(i), {"x": i})))
    ts = _ts(len(events) + 1)
    pairs.append((b.seal_line(ts, reason, len(events), now=NOW), r.seal(ts, reason, len(events))))
    _same_session(pairs)
