"""Step 1 of verification: parse the lines of a byte range and check what a line can
prove with its predecessor alone (SPEC.md section 5, checks 1 to 5, and 7 within the
range).

``scan_chunk`` parses a byte range of one file line by line: shape, UTF-8, seq, chain.
It folds every leaf hash into a ``CompactRange`` and sets aside the lines the format
gives meaning to (``session.opened``, checkpoints, the seal) with the range as it stood
before them. ``_scan_lines`` is the reference loop, every rule in Python; the optional C
helper (``ledger._speedups.scan``) takes the runs of plain lines it accepts and hands
every other line back to the reference (``_scan_blocks``).
"""

from __future__ import annotations

import binascii
import hashlib
import os
import re
from dataclasses import dataclass, field

import msgspec

from .. import format as fmt
from ..merkle import CompactRange

try:  # the hot loop in C (ledger/_speedups.c); LEDGER_PURE_PYTHON=1 keeps the reference alone
    from .. import _speedups
except ImportError:  # built without a C compiler: the pure-Python loop gives the same verdicts
    _speedups = None
if os.environ.get("LEDGER_PURE_PYTHON"):
    _speedups = None

BLOCK_SIZE = 4 * 2**20

# Everything before data, byte for byte: key order, compactness, v, seq without
# leading zeros, ts with microseconds and Z. data must then be one JSON object.
_HEADER = re.compile(
    rb'\{"v":1,"seq":(0|[1-9][0-9]{0,17}),"ts":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:'
    # kind: a non-empty JSON string body, the escape loop unrolled (fast when there is none)
    rb'[0-9]{2}:[0-9]{2}\.[0-9]{6}Z","kind":"('
    rb'[^"\\\x00-\x1f]+(?:\\.[^"\\\x00-\x1f]*)*|(?:\\.[^"\\\x00-\x1f]*)+'
    rb')","data":(?=\{)'
)
_raw_json = msgspec.json.Decoder(msgspec.Raw)
_SPECIAL_KINDS = frozenset({b"session.opened", b"ledger.checkpoint", b"session.sealed"})
_TRAILER = fmt.TRAILER_LEN  # ,"chain":"<64 hex>"} ends every line, before its LF
_CHAIN_KEY = fmt.CHAIN_KEY
_CHAIN_HEX_BACK = fmt.CHAIN_HEX_BACK  # the chain hex is line[n - _CHAIN_HEX_BACK : n - 2]


@dataclass
class _Special:
    rel_line: int  # 0-based within the chunk
    seq: int
    kind: str
    data: bytes
    before: CompactRange | None  # leaves of this chunk before this line
    prev_chain: bytes  # C_(seq-1)
    ts: str = ""


@dataclass
class _Chunk:
    lines: int = 0
    first_seq: int | None = None
    range: CompactRange = field(default_factory=CompactRange)
    specials: list[_Special] = field(default_factory=list)
    error: tuple[int, int | None, str, str] | None = None  # rel_line, seq, reason, detail
    last_chain: bytes = b""
    torn_bytes: int = 0
    sealed_rel: int | None = None


def _read_prev_chain(f, start: int) -> bytes | None:
    """The chain value stored on the line that ends just before ``start``."""
    if start == 0:
        return fmt.ZERO_CHAIN
    f.seek(start - _TRAILER - 1)
    tail = f.read(_TRAILER + 1)
    try:
        return bytes.fromhex(tail[len(_CHAIN_KEY) : len(_CHAIN_KEY) + fmt.CHAIN_HEX_LEN].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


@dataclass(slots=True)
class _Scan:
    """Where a scan of consecutive lines stands. The reference loop (_scan_lines) and
    the C helper (_speedups.scan) both advance it, taking turns line by line."""

    prev: bytes | None  # C_(index-1): the chain value stored on the line before
    at_start: bool  # the first line scanned is line 0 of the file
    index: int = -1  # the seq the next line must have (-1: the first line sets it)
    begin: int = -1  # the seq of the first line scanned
    lines: int = 0  # lines accepted (chain held, folded into the stack)
    stack: list[bytes] = field(default_factory=list)  # the compact range's subtree hashes
    sealed_rel: int | None = None  # the line of session.sealed, counted from the first


def scan_chunk(path: str, start: int, end: int, stop=None) -> _Chunk:
    """Parse and chain-check the complete lines in bytes [start, end) of ``path``."""
    out = _Chunk()
    with open(path, "rb") as f:
        st = _Scan(_read_prev_chain(f, start), start == 0)
        _scan_blocks(f, start, end, st, out, stop)
    _finish(st, out)
    return out


def _finish(st: _Scan, out: _Chunk) -> None:
    # Every line before the error (or all of them) was folded into the range.
    begin = max(st.begin, 0)
    out.lines = st.lines
    out.range = _range_of(begin, begin + st.lines, st.stack)
    out.last_chain = st.prev or b""
    out.sealed_rel = st.sealed_rel


def _scan_blocks(f, start: int, end: int | None, st: _Scan, out: _Chunk, stop=None) -> None:
    """Read bytes [start, end) of ``f`` (``end`` None: a stream, to EOF) and scan its lines.

    With the C helper, it takes the run of lines it accepts and stops at the first it
    does not; that line goes through the reference loop, which gives the verdict or
    handles it (a checkpoint, the seal, the first line), and the helper goes on after
    it. Without the helper, the reference takes every complete line of each block.

    Bytes after the last LF are a torn tail (``out.torn_bytes``). A line longer than
    MAX_LINE_BYTES is reported as soon as it is known to be too long, so memory stays
    bounded whatever the file holds. One buffer is read into and reused: a fresh 4 MiB
    object per read costs page faults. ``stop`` (an Event) set means the caller
    already has its answer: return early.
    """
    scan = _speedups.scan if _speedups is not None else None
    max_line = fmt.MAX_LINE_BYTES
    readinto = getattr(f, "readinto", None)  # a stream with read() alone is copied in
    if end is not None:
        f.seek(start)
    pos = start
    buf = bytearray(BLOCK_SIZE)
    have = 0  # buf[:have] holds bytes read and not yet scanned (a partial line at most)
    while end is None or pos < end:
        if stop is not None and stop.is_set():
            return
        if have == len(buf):  # one line fills the buffer; the length check below bounds it
            buf.extend(bytes(len(buf)))
        want = len(buf) - have if end is None else min(len(buf) - have, end - pos)
        if readinto is not None:
            with memoryview(buf) as mv:
                n = readinto(mv[have : have + want])
        else:
            data = f.read(want)
            n = len(data)
            buf[have : have + n] = data
        if not n:
            break
        pos += n
        have += n
        at = 0
        if scan is None:
            last = buf.rfind(b"\n", 0, have)
            if last >= 0:
                with memoryview(buf) as mv:
                    lines = bytes(mv[:last]).split(b"\n")
                _scan_lines(lines, st, out)
                if out.error is not None:
                    return
                at = last + 1
        else:
            while True:
                if st.index > 0 and st.prev is not None and st.sealed_rel is None:
                    at, count, chain = scan(buf, at, have, st.prev, st.index, st.begin, st.stack, max_line)
                    if count:
                        st.prev, st.index, st.lines = chain, st.index + count, st.lines + count
                lf = buf.find(b"\n", at, have)
                if lf < 0:
                    break
                _scan_lines((bytes(buf[at:lf]),), st, out)
                if out.error is not None:
                    return
                at = lf + 1
        buf[: have - at] = buf[at:have]  # keep the partial line, at the front
        have -= at
        if have > max_line:
            _scan_lines((None,), st, out)
            return
    out.torn_bytes = have


def _scan_lines(lines, st: _Scan, out: _Chunk) -> None:
    # The reference: every rule a line must meet, in Python. Per line: one regex match
    # for the header, one JSON syntax check of data (no objects built), two SHA-256
    # calls (leaf, chain) and on average one Merkle node hash. The range's subtree
    # hashes sit on a plain stack whose levels follow from the leaf index; _range_of
    # rebuilds (level, index) only when needed. Copying a hash state is cheaper than
    # creating one (no OpenSSL init per call). _speedups.scan does the same for the
    # lines it accepts (see _scan_blocks).
    leaf_state = hashlib.sha256(b"\x00").copy
    node_state = hashlib.sha256(b"\x01").copy
    empty_state = hashlib.sha256().copy
    hexlify = binascii.hexlify
    header = _HEADER.match
    raw_check = _raw_json.decode
    chain_key = _CHAIN_KEY
    trailer, hex_back = _TRAILER, _CHAIN_HEX_BACK
    specials = _SPECIAL_KINDS
    max_line = fmt.MAX_LINE_BYTES
    nesting_exceeds = fmt.nesting_exceeds
    at_start, stack = st.at_start, st.stack
    prev, begin, index, sealed_rel = st.prev, st.begin, st.index, st.sealed_rel
    rel = st.lines - 1
    for line in lines:
        rel += 1
        if sealed_rel is not None:
            out.error = (rel, index, "after_seal", "a line follows session.sealed")
            break
        n = len(line) if line is not None else max_line + 1
        if n > max_line:
            out.error = (rel, index if index >= 0 else None, "line_too_long", f"line longer than {max_line} bytes")
            break
        m = header(line)
        if m is None or line[n - trailer : n - hex_back] != chain_key or line[n - 2 :] != b'"}':
            out.error = (rel, index if index >= 0 else None, *_diagnose(line))
            break
        seq = int(m[1])
        if seq != index:
            if index >= 0 or (at_start and seq != 0):
                expected = max(index, 0)
                out.error = (rel, expected, "seq_mismatch", f"expected seq {expected}, found {seq}")
                break
            begin = index = seq
            out.first_seq = seq
        body = line[: n - trailer]
        data = body[m.end() :]
        try:  # SPEC 5 step 1 before step 2: a bad byte in a string is not_utf8 even in bad JSON
            if not body.isascii():
                body.decode("utf-8")
        except UnicodeDecodeError:
            out.error = (rel, seq, "not_utf8", "line is not valid UTF-8")
            break
        if nesting_exceeds(data):
            out.error = (rel, seq, "malformed", f"data nests deeper than {fmt.MAX_DATA_DEPTH} levels")
            break
        try:
            raw_check(data)
        except msgspec.DecodeError as exc:
            out.error = (rel, seq, "malformed", f"data is not one JSON object: {exc}")
            break
        h = leaf_state()
        h.update(body)
        h.update(b"}")
        leaf = h.digest()
        if prev is None:
            out.error = (rel, seq, "chain_mismatch", "previous line has no chain value")
            break
        h = empty_state()
        h.update(prev)
        h.update(leaf)
        chain = h.digest()
        if hexlify(chain) != line[n - hex_back : n - 2]:
            out.error = (rel, seq, "chain_mismatch", "stored chain value does not match")
            break
        kind = m[2]
        if kind in specials or seq == 0 or b"\\" in kind:
            kind = _unescape(kind)
            if (seq == 0) != (kind == b"session.opened"):
                what = "line 0 must be session.opened" if seq == 0 else "session.opened after line 0"
                out.error = (rel, seq, "bad_opened", what)
                break
            if kind in specials:
                before = _range_of(begin, seq, stack) if kind != b"session.opened" else None
                ts = line[m.end(1) + 7 : m.end(1) + 34].decode("ascii")  # after ,"ts":"
                out.specials.append(_Special(rel, seq, kind.decode(), bytes(data), before, prev, ts))
                if kind == b"session.sealed":
                    sealed_rel = rel
        # Fold the leaf in: merge with each left sibling that lies inside this chunk.
        h, j, lv = leaf, seq, 0
        while j & 1 and ((j - 1) << lv) >= begin:
            node = node_state()
            node.update(stack.pop())
            node.update(h)
            h = node.digest()
            j >>= 1
            lv += 1
        stack.append(h)
        prev = chain
        index = seq + 1
    st.lines = rel if out.error is not None else rel + 1
    st.prev, st.begin, st.index, st.sealed_rel = prev, begin, index, sealed_rel


def _unescape(kind: bytes) -> bytes:
    """The kind as a JSON reader sees it: an escaped kind must not hide a special one."""
    if b"\\" not in kind:
        return kind
    try:
        return msgspec.json.decode(b'"' + kind + b'"').encode()
    except msgspec.DecodeError:
        return kind


def _range_of(begin: int, end: int, stack: list[bytes]) -> CompactRange:
    """A CompactRange from the stack of subtree hashes covering [begin, end)."""
    r = CompactRange(begin)
    r.end = end
    r.nodes = [(lv, i, h) for (lv, i), h in zip(decompose(begin, end), stack, strict=True)]
    return r


def decompose(begin: int, end: int) -> list[tuple[int, int]]:
    """(level, index) of the maximal aligned subtrees covering [begin, end), left to right."""
    nodes = []
    while begin < end:
        level = (begin & -begin).bit_length() - 1 if begin else (end - begin).bit_length() - 1
        while 1 << level > end - begin:
            level -= 1
        nodes.append((level, begin >> level))
        begin += 1 << level
    return nodes


def _diagnose(line: bytes) -> tuple[str, str]:
    """Why a line failed the fast shape check (the slow path: only on error)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", "line is not valid UTF-8"
    if not line:
        return "malformed", "empty line"
    if fmt.nesting_exceeds(line, fmt.MAX_DATA_DEPTH + 1):
        return "malformed", f"data nests deeper than {fmt.MAX_DATA_DEPTH} levels"
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        return "malformed", f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return "malformed", "not a JSON object"
    keys = list(obj)
    if keys != ["v", "seq", "ts", "kind", "data", "chain"]:
        return "malformed", f"keys must be v, seq, ts, kind, data, chain in order; found {', '.join(keys[:8])}"
    if obj["v"] != fmt.VERSION:
        return "bad_version", f"unsupported version {obj['v']!r}"
    return "malformed", "line is not in the v1 shape (compact, ts with microseconds and Z, lowercase hex)"


# ---- for readers that check as they go (ledger tail --verify) --------------------------------


def parse_header(line: bytes) -> tuple[int, str, str, int, int] | None:
    """(seq, ts, kind, data start, data end) of a line (LF optional) in the v1 shape, or None.

    Shape only (section 2.2 header and trailer); the chain is not checked. ``kind`` is
    unescaped as a JSON reader would see it.
    """
    n = len(line) - 1 if line.endswith(b"\n") else len(line)
    m = _HEADER.match(line)
    if (
        m is None
        or n < _TRAILER + 20
        or line[n - _TRAILER : n - _CHAIN_HEX_BACK] != _CHAIN_KEY
        or line[n - 2 : n] != b'"}'
    ):
        return None
    ts_at = m.end(1) + 7  # after the seq digits: ,"ts":"
    kind = _unescape(m[2]).decode("utf-8", "replace")
    return int(m[1]), line[ts_at : ts_at + 27].decode("ascii"), kind, m.end(), n - _TRAILER
