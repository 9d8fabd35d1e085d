"""Verify session files: parse, then check, then report (SPEC.md section 5).

Layering, as in sigstore-python:

1. ``scan_chunk`` parses a byte range of one file line by line and checks what a
   line can prove with its predecessor alone: shape, UTF-8, seq, chain. It folds
   every leaf hash into a ``CompactRange`` and sets aside the lines the format gives
   meaning to (``session.opened``, checkpoints, the seal) with the range as it
   stood before them.
2. ``_check_file`` splits a file at line boundaries, scans the chunks (in worker
   processes for large files: the chain check needs only the previous line's
   stored chain value, so chunks are independent), then walks the results in
   order: seq continuity across chunks, every checkpoint's size, root, chain and
   signatures, the seal being last, the policy on unsealed files.
3. ``verify_path`` groups files by namespace, checks ``prev`` links, and returns a
   ``VerifyReport``; the CLI renders it. Nothing here prints.

A file still being written is read up to the size it had when its check began.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import dataclasses
import gzip
import hashlib
import multiprocessing
import os
import re
import stat
import threading
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from . import format as fmt
from . import fsseal, lastseal, notes
from .capture_verify import verify_local_captures
from .errors import InputError
from .keys import key_id
from .merkle import EMPTY_ROOT, CompactRange
from .regular import NotRegularFile, read_small

try:  # the hot loop in C (ledger/_speedups.c); LEDGER_PURE_PYTHON=1 keeps the reference alone
    from . import _speedups
except ImportError:  # built without a C compiler: the pure-Python loop gives the same verdicts
    _speedups = None
if os.environ.get("LEDGER_PURE_PYTHON"):
    _speedups = None

BLOCK_SIZE = 4 * 2**20
# Files below this are checked in one pass: starting workers costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 2**20

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
_TRAILER = fmt.TRAILER_LEN  # 76: ,"chain":"<64 hex>"}
_CHAIN_KEY = fmt.CHAIN_KEY


@dataclass(frozen=True)
class Policy:
    """What must hold. With no trusted key of any kind, signatures are not checked (and
    the report says so); with any, every checkpoint needs a signature by one of them.

    ``keys``: HMAC keys; ``verifiers``: Ed25519 note verifiers (ledger.notes.Verifier);
    ``fs_seeds``: forward-secure sealing seeds (ledger.fsseal.FsSeed).
    """

    keys: tuple[bytes, ...] = ()
    allow_unsealed: bool = False
    jobs: int = 0  # worker processes for large files; 0 = one per core, 1 = in-process
    verifiers: tuple = ()
    fs_seeds: tuple = ()

    def __post_init__(self) -> None:
        if any(len(k) == 0 for k in self.keys):
            raise ValueError("an empty key cannot be trusted")

    @property
    def checks_signatures(self) -> bool:
        return bool(self.keys or self.verifiers or self.fs_seeds)


@dataclass
class FirstError:
    line: int | None  # 1-based
    seq: int | None
    reason: str
    detail: str

    def as_dict(self) -> dict:
        return {"line": self.line, "seq": self.seq, "reason": self.reason, "detail": self.detail}


@dataclass
class FileReport:
    path: str
    events: int = 0
    bytes: int = 0
    sealed: bool = False
    seal_reason: str | None = None
    checkpoints: int = 0
    signed_size: int = 0  # size of the last checkpoint that verified
    signers: list[str] = field(default_factory=list)
    signed_by: list[dict] = field(default_factory=list)  # per checkpoint: line, size, keys
    root: str = EMPTY_ROOT.hex()
    chain: str = ""
    signatures: str = "unchecked"
    torn_tail_bytes: int = 0
    first_error: FirstError | None = None
    session: str | None = None
    origin: str | None = None
    prev: fmt.PrevLink | None = None
    notes: list[str] = field(default_factory=list)
    # The tree of the lines that verified, for a writer resuming this session.
    tree: CompactRange | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.first_error is None

    def as_dict(self) -> dict:
        return {
            "path": self.path,
            "session": self.session,
            "events": self.events,
            "sealed": self.sealed,
            "seal_reason": self.seal_reason,
            "checkpoints": self.checkpoints,
            "signed_size": self.signed_size,
            "signers": self.signers,
            "signed_by": self.signed_by,
            "root": self.root,
            "chain": self.chain,
            "signatures": self.signatures,
            "torn_tail_bytes": self.torn_tail_bytes,
            "first_error": self.first_error.as_dict() if self.first_error else None,
            "notes": self.notes,
        }


@dataclass
class VerifyReport:
    files: list[FileReport]
    # capture_verify.CaptureCheck: the pcaps the verified sessions recorded (issue 11 item 2).
    captures: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. what was skipped, and why

    @property
    def ok(self) -> bool:
        return bool(self.files) and all(f.ok for f in self.files) and all(c.ok for c in self.captures)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "files": [f.as_dict() for f in self.files],
            "captures": [c.as_dict() for c in self.captures],
            "notes": self.notes,
        }


# ---- step 1: scan one chunk -----------------------------------------------------------


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
        return bytes.fromhex(tail[len(_CHAIN_KEY) : len(_CHAIN_KEY) + 64].decode("ascii"))
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
        if m is None or line[n - 76 : n - 66] != chain_key or line[n - 2 :] != b'"}':
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
        body = line[: n - 76]
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
        if hexlify(chain) != line[n - 66 : n - 2]:
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


# ---- step 2: check one file -----------------------------------------------------------


def _boundaries(path: str, size: int, parts: int) -> list[tuple[int, int]]:
    """Split [0, size) into ``parts`` ranges that start just after an LF."""
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, parts):
            target = max(size * i // parts, cuts[-1])
            f.seek(target)
            while True:
                block = f.read(65536)
                if not block:
                    target = size
                    break
                nl = block.find(b"\n")
                if nl >= 0:
                    target += nl + 1
                    break
                target += len(block)
            if target >= size:
                break
            cuts.append(target)
    cuts.append(size)
    return list(zip(cuts[:-1], cuts[1:], strict=True))


_stop_event = None  # in a worker process: set by the parent once the answer is known


def _init_worker(stop) -> None:
    global _stop_event
    _stop_event = stop


def _scan_args(args: tuple[str, int, int]) -> _Chunk:
    if _stop_event is not None and _stop_event.is_set():
        return _Chunk()  # the parent stopped reading: skip the work
    return scan_chunk(*args, stop=_stop_event)


def _scan_file(path: str, size: int, jobs: int) -> Iterable[_Chunk]:
    if jobs <= 0:
        jobs = os.cpu_count() or 1
    if jobs == 1 or size < PARALLEL_MIN_BYTES:
        yield scan_chunk(path, 0, size)
        return
    # More chunks than workers so a bad line early in the file stops work early.
    bounds = _boundaries(path, size, jobs * 4)
    if _speedups is not None:
        yield from _scan_in_threads(path, bounds, jobs)
    else:
        yield from _scan_in_processes(path, bounds, jobs)


def _scan_in_threads(path: str, bounds: list[tuple[int, int]], jobs: int) -> Iterable[_Chunk]:
    # The C helper lets go of the GIL while it scans a block, so threads share the
    # work with no fork and no pickling of results; Python runs only for the few
    # lines the helper hands back.
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(jobs, thread_name_prefix="ledger-verify") as pool:
        futures = [pool.submit(scan_chunk, path, a, b, stop) for a, b in bounds]
        try:
            for future in futures:
                yield future.result()
        finally:
            stop.set()
            for future in futures:
                future.cancel()


def _scan_in_processes(path: str, bounds: list[tuple[int, int]], jobs: int) -> Iterable[_Chunk]:
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    pool = ctx.Pool(jobs, initializer=_init_worker, initargs=(stop,))
    try:
        yield from pool.imap(_scan_args, [(path, a, b) for a, b in bounds])
    finally:
        # Never terminate(): a worker killed while putting its result holds the result
        # queue's lock and the pool hangs. Ask the rest to skip, then let them finish.
        stop.set()
        pool.close()
        pool.join()


class _FileCheck:
    """Step 2 for one file: walks chunk results in order and applies the policy."""

    def __init__(self, path: str, policy: Policy) -> None:
        self.policy = policy
        self.trusted = {key_id(k): k for k in policy.keys}
        self.report = FileReport(path=path, signatures="verified" if policy.checks_signatures else "unchecked")
        self.ed25519 = {v.key_name(): v for v in policy.verifiers}
        self.fs = {s.seed_id: fsseal.FsVerifier(s) for s in policy.fs_seeds}
        self.fs_seed_of = {s.seed_id: s for s in policy.fs_seeds}
        self.fs_last_epoch: dict[str, int] = {}
        self.acc = CompactRange(0)
        self.lines = 0
        self.last_chain = fmt.ZERO_CHAIN
        self.sealed_line: int | None = None

    def fail(self, line: int | None, seq: int | None, reason: str, detail: str) -> None:
        if self.report.first_error is None:
            self.report.first_error = FirstError(line, seq, reason, detail)

    def chunk(self, c: _Chunk) -> bool:
        """Apply one chunk; False once an error is recorded (later chunks are moot)."""
        base = self.lines
        if c.lines or c.error:
            if self.sealed_line is not None:
                self.fail(base + 1, base, "after_seal", "a line follows session.sealed")
                return False
            if c.first_seq is not None and c.first_seq != base:
                self.fail(base + 1, base, "seq_mismatch", f"expected seq {base}, found {c.first_seq}")
                return False
        for sp in c.specials:
            if not self.special(sp, base, c):
                # The lines before the bad one held: report their tree and chain.
                self.lines = base + sp.rel_line
                if sp.before is not None:
                    self.acc.extend(sp.before)
                    self.last_chain = sp.prev_chain
                return False
        if c.error is not None:
            rel, seq, reason, detail = c.error
            self.lines = base + c.lines  # lines that verified before the bad one
            if c.lines:
                self.acc.extend(c.range)
                self.last_chain = c.last_chain
            self.fail(base + rel + 1, seq if seq is not None else base + rel, reason, detail)
            return False
        if c.lines:  # a chunk may hold nothing but a torn tail
            self.acc.extend(c.range)
            self.last_chain = c.last_chain
        self.lines += c.lines
        if c.sealed_rel is not None:
            self.sealed_line = base + c.sealed_rel + 1
        if c.torn_bytes:
            self.report.torn_tail_bytes = c.torn_bytes
        return True

    def special(self, sp: _Special, base: int, c: _Chunk) -> bool:
        line = base + sp.rel_line + 1
        if sp.kind == fmt.KIND_OPENED:
            try:
                opened = fmt.decode_opened(sp.data)
            except msgspec.ValidationError as exc:
                self.fail(line, sp.seq, "bad_opened", f"session.opened data: {exc}")
                return False
            if not opened.origin.startswith("ledger/") or not opened.origin.endswith("/" + opened.session):
                self.fail(
                    line, sp.seq, "bad_opened", f"origin {opened.origin!r} does not name session {opened.session}"
                )
                return False
            self.report.session, self.report.origin, self.report.prev = opened.session, opened.origin, opened.prev
            if opened.quarantined:
                self.report.notes.append(
                    f"previous session {opened.quarantined} was quarantined: {opened.quarantine_reason}"
                )
            return True
        if self.report.origin is None:
            self.fail(line, sp.seq, "bad_opened", "checkpoint before session.opened")
            return False
        try:
            cp = fmt.decode_checkpoint(sp.kind, sp.data)
        except msgspec.ValidationError as exc:
            self.fail(line, sp.seq, "bad_checkpoint", f"{sp.kind} data: {exc}")
            return False
        if isinstance(cp, fmt.Sealed) and not fmt.valid_seal_reason(cp.reason):
            # The reason is a word of the signed seal text (SPEC 4.3).
            self.fail(line, sp.seq, "bad_checkpoint", f"seal reason {cp.reason[:40]!r} is not [a-z][a-z_]{{0,31}}")
            return False
        n = sp.seq
        if cp.size != n:
            self.fail(line, n, "size_mismatch", f"checkpoint size {cp.size} at seq {n}")
            return False
        tree = self.acc.copy()
        tree.extend(sp.before)
        root = tree.root()
        if cp.root != root.hex():
            self.fail(line, n, "root_mismatch", f"root {cp.root[:16]}.. but the events hash to {root.hex()[:16]}..")
            return False
        if cp.chain != sp.prev_chain.hex():
            self.fail(line, n, "chain_mismatch", "checkpoint chain is not the previous line's chain")
            return False
        if not self.signatures(cp, root, line, n, sp.ts):
            return False
        self.report.checkpoints += 1
        self.report.signed_size = n
        if isinstance(cp, fmt.Sealed):
            self.report.seal_reason = cp.reason
        return True

    def signatures(self, cp: fmt.Checkpoint, root: bytes, line: int, n: int, ts: str = "") -> bool:
        """At least one signature by a trusted key, and every trusted signature verifies."""
        if not self.policy.checks_signatures:
            return True
        text = fmt.signed_text(self.report.origin or "", cp, root)
        signed_by = []
        for sig in cp.sigs:
            verdict = self._check_sig(sig, text, ts)
            if verdict is None:
                continue  # not a key this verifier trusts
            if verdict is not True:
                self.fail(line, n, "bad_signature", f"{sig.alg} signature by {sig.key}: {verdict}")
                return False
            signed_by.append(sig.key)
        if not signed_by:
            found = ", ".join(f"{s.alg}:{s.key}" for s in cp.sigs) or "none"
            self.fail(line, n, "bad_signature", f"no signature by a trusted key (signed by: {found})")
            return False
        missing = self._missing_fs(signed_by, ts)
        if missing:
            # Forward security only holds if the FS signature cannot simply be stripped
            # and the checkpoint re-signed with the host's other keys.
            self.fail(line, n, "bad_signature", f"no forward-secure signature by seed {missing}")
            return False
        for k in signed_by:
            if k not in self.report.signers:
                self.report.signers.append(k)
        self.report.signed_by.append({"line": line, "size": n, "keys": signed_by})
        return True

    def _missing_fs(self, signed_by: list[str], ts: str) -> str | None:
        """A seed given to the verifier whose epochs cover this line but did not sign it."""
        for seed_id, seed in self.fs_seed_of.items():
            if ts and _ts_epoch_seconds(ts) < seed.t0:
                continue  # written before sealing started
            if not any(k.startswith(f"fs:{seed_id}:") for k in signed_by):
                return seed_id
        return None

    def _check_sig(self, sig: fmt.Sig, text: bytes, ts: str) -> bool | str | None:
        """None: untrusted key (ignored); True: verifies; a string: why it does not."""
        if sig.alg == "hmac-sha256":
            key = self.trusted.get(sig.key)
            if key is None:
                return None
            return True if fmt.hmac_matches(key, text, sig.sig) else "does not verify"
        if sig.alg == notes.CHECKPOINT_SIG_ALG:
            verifier = self.ed25519.get(sig.key)
            if verifier is None:
                return None
            try:
                blob = base64.b64decode(sig.sig, validate=True)
            except ValueError:
                return "not base64"
            ok = blob[:4] == verifier.key_hash and verifier.verify(text, blob[4:])
            return True if ok else "does not verify"
        if sig.alg == fsseal.ALG:
            label = fsseal.parse_key_label(sig.key)
            if label is None or label[0] not in self.fs:
                return None
            seed_id, epoch = label
            seed = self.fs_seed_of[seed_id]
            try:
                expected = seed.epoch_at(_ts_epoch_seconds(ts)) if ts else None
            except (ValueError, fsseal.FsSealError):
                return "line time is before the seed's start"
            if expected is not None and epoch != expected:
                return f"epoch {epoch} does not match the line's time (epoch {expected})"
            if epoch < self.fs_last_epoch.get(seed_id, 0):
                return f"epoch {epoch} goes backwards"
            if not self.fs[seed_id].verify(sig, text, expected_epoch=expected):
                return "does not verify"
            self.fs_last_epoch[seed_id] = epoch
            return True
        return None

    def finish(self, size: int) -> FileReport:
        r = self.report
        r.events = self.lines
        r.bytes = size
        r.root = self.acc.root().hex()
        r.tree = self.acc
        r.chain = self.last_chain.hex() if self.lines else ""
        r.sealed = self.sealed_line is not None and r.first_error is None
        if r.first_error is not None:
            r.sealed = False
            return r
        if size == 0:
            self.fail(None, None, "empty", "empty file: no session.opened line")
        elif self.lines == 0:
            self.fail(None, None, "empty", "no complete line (no LF in the file)")
        elif self.sealed_line is not None and r.torn_tail_bytes:
            self.fail(self.lines + 1, self.lines, "after_seal", f"{r.torn_tail_bytes} bytes follow session.sealed")
        elif self.sealed_line is None and not self.policy.allow_unsealed:
            self.fail(None, None, "unsealed", "no session.sealed line: the file may have been cut short")
        if r.first_error is not None:
            r.sealed = False
        return r


GZIP_MAGIC = b"\x1f\x8b"  # a session's first byte is '{': the two never collide


def not_regular(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it is not a regular file (a FIFO, socket or device would block
    or never end), or None. Follows symlinks; a missing path is None (open() reports it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device")):
        if test(mode):
            return what
    return "a block device" if stat.S_ISBLK(mode) else "not a regular file"


def _open_regular(p: str):
    """Open ``p`` for reading without ever blocking: O_NONBLOCK, then refuse anything but a
    regular file (stat then open would leave a window for a FIFO to be swapped in)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise InputError(f"{p}: is a directory")
        raise InputError(f"{p}: {not_regular(p) or 'not a regular file'}, not a session file; refusing to read it")
    os.set_blocking(fd, True)
    return open(fd, "rb")


def verify_file(path: str | os.PathLike[str], policy: Policy = Policy()) -> FileReport:
    """Verify one session file up to the size it has now; a gzip-compressed one (by its
    magic bytes) decompressed, streamed. Raises InputError if unreadable or not a regular
    file (a FIFO, socket or device is refused, never waited on)."""
    p = os.fspath(path)
    with _open_regular(p) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            magic = f.read(2)
            if magic == GZIP_MAGIC:
                f.seek(0)
                return verify_gzip(f, p, policy)
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}") from None
    check = _FileCheck(p, policy)
    try:
        for chunk in _scan_file(p, size, policy.jobs):
            if not check.chunk(chunk):
                break
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror}") from None
    return check.finish(size)


# ---- step 3: many files, prev links -------------------------------------------------


def session_files(root: Path) -> dict[Path, list[Path]]:
    """Session files below ``root`` grouped by namespace directory, each in session order."""
    groups: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names = sorted(n for n in filenames if n.endswith(".ndjson") and not n.startswith("."))
        if names:
            groups[Path(dirpath)] = [Path(dirpath) / n for n in names]
    return groups


def prev_link(report: FileReport) -> fmt.PrevLink:
    """What the next session's ``prev`` must say about this sealed one."""
    return fmt.PrevLink(session=report.session or "", size=report.events, root=report.root, chain=report.chain)


def check_prev_links(reports: Sequence[FileReport]) -> None:
    """Each session of a namespace must name the one before it (in session order)."""
    for before, after in zip(reports, reports[1:], strict=False):
        if not after.ok or not before.ok or after.prev is None and before.session is None:
            continue
        if after.prev is None:
            after.first_error = FirstError(1, 0, "prev_mismatch", f"prev is null but {before.session} precedes it")
        elif not before.sealed:
            after.notes.append(f"previous session {before.session} is unsealed; prev link not checked")
        elif after.prev != prev_link(before):
            after.first_error = FirstError(
                1, 0, "prev_mismatch", f"prev does not match sealed session {before.session}"
            )
    if reports and reports[0].ok and reports[0].prev is not None:
        reports[0].notes.append(f"prev session {reports[0].prev.session} is not here (archived?); link not checked")


def verify_path(paths: Sequence[str | os.PathLike[str]], policy: Policy = Policy()) -> VerifyReport:
    """Verify files and directories (every namespace below a directory, in order)."""
    if not paths:
        raise InputError("nothing to verify")
    groups: list[list[Path]] = []  # one list per namespace directory (prev links), or a lone file
    ns_dirs: list[Path | None] = []  # the namespace directory of each group found in one
    notes: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = session_files(p)
            for group in found.values():
                for f in [f for f in group if not_regular(f)]:
                    notes.append(f"skipped {f}: {not_regular(f)}, not a session file")
                    group.remove(f)
            found = {d: g for d, g in found.items() if g}
            if not found:
                raise InputError(f"{p}: no session files (*.ndjson) found")
            groups.extend(found.values())
            ns_dirs.extend(found)
        elif what := not_regular(p):
            raise InputError(f"{p}: {what}, not a session file; refusing to read it")
        elif p.exists():
            groups.append([p])
            ns_dirs.append(None)
        else:
            raise InputError(f"{p}: no such file or directory")
    reports = iter(_verify_many([f for g in groups for f in g], policy))
    files: list[FileReport] = []
    for group, ns_dir in zip(groups, ns_dirs, strict=True):
        done = [next(reports) for _ in group]
        check_prev_links(done)
        files.extend(done)
        if ns_dir is not None:
            files.extend(check_last_seal(ns_dir, done, policy))
    # Captures are evidence too: each pcap recorded below a directory, against its pointer.
    captures = verify_local_captures(files, [p for p in paths if Path(p).is_dir()])
    return VerifyReport(files, captures, notes)


LAST_SEAL_LIMIT = 4096  # the record is a few hundred bytes


def check_last_seal(ns_dir: Path, reports: Sequence[FileReport], policy: Policy) -> list[FileReport]:
    """Compare the newest sealed session of a namespace directory with the writer's
    ``.last-seal.json`` (SPEC.md sections 5 and 7).

    With an HMAC key the record's MAC must verify (else ``bad_signature`` on the
    record), and a session it names that is neither present nor recorded as archived
    and deleted locally (an ``archive.local_deleted`` event in a later session) is
    ``missing_session``. Without a key the record is unauthenticated: it is reported,
    never trusted. Returns the reports to add (for the record or the missing session);
    notes go on the newest session's report.
    """
    path = ns_dir / lastseal.FILE_NAME
    newest = reports[-1]
    try:
        raw = read_small(path, LAST_SEAL_LIMIT)
    except FileNotFoundError:
        newest.notes.append(f"no {lastseal.FILE_NAME}: the newest session is not checked against the writer's record")
        return []
    except NotRegularFile as exc:  # a FIFO, /dev/zero, a directory: the record fails, the rest is verified
        return [_record_failure(path, "malformed", exc.strerror)]
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    try:
        record = lastseal.parse(raw)
    except ValueError as exc:
        return [_record_failure(path, "malformed", str(exc))]
    namespace = ns_dir.name
    if not policy.keys:
        newest.notes.append(
            f"{lastseal.FILE_NAME} is unauthenticated (no HMAC key): its claim that {record.session} "
            "is the newest sealed session was not checked"
        )
        return []
    if not lastseal.authentic(namespace, record, policy.keys):
        return [_record_failure(path, "bad_signature", "its MAC does not verify with a trusted key (rewritten?)")]
    named = next((r for r in reports if r.session == record.session), None)
    if named is not None and named.ok and named.sealed and prev_link(named) != record.link():
        return [_record_failure(path, "prev_mismatch", f"does not match sealed session {record.session}")]
    sealed = [r.session for r in reports if r.ok and r.sealed and r.session]
    if sealed and max(sealed) > record.session:
        newest.notes.append(
            f"{lastseal.FILE_NAME} names {record.session}, older than the newest sealed session "
            "(a crash between a seal and the record?); the next writer open rewrites it"
        )
        return []
    if named is not None:
        return []
    if (ns_dir / f"{record.session}.ndjson").exists():
        newest.notes.append(f"{record.session} appeared while verifying (a live writer); not checked")
        return []
    if _records_local_deletion(reports, record.session):
        newest.notes.append(f"newest sealed session {record.session} was archived and deleted locally (recorded)")
        return []
    missing = FileReport(path=str(ns_dir / f"{record.session}.ndjson"), session=record.session)
    missing.first_error = FirstError(
        None,
        None,
        "missing_session",
        f"{lastseal.FILE_NAME} names {record.session} as the newest sealed session ({record.size} lines); "
        "it is not here and no archive.local_deleted event records its deletion",
    )
    return [missing]


def _record_failure(path: Path, reason: str, detail: str) -> FileReport:
    r = FileReport(path=str(path))
    r.first_error = FirstError(None, None, reason, f"{lastseal.FILE_NAME}: {detail}")
    return r


def _records_local_deletion(reports: Sequence[FileReport], session: str) -> bool:
    """Whether a verified session after ``session`` holds ``archive.local_deleted`` for it."""
    needle = f'"session":"{session}"'.encode()
    for r in reports:
        if not (r.ok and r.session and r.session > session):
            continue
        with open(r.path, "rb") as f:
            for line in f:
                if b'"kind":"archive.local_deleted"' in line[:120] and needle in line and line.endswith(b"\n"):
                    try:
                        data = msgspec.json.decode(line).get("data")
                    except msgspec.DecodeError:
                        continue
                    if isinstance(data, dict) and data.get("session") == session:
                        return True
    return False


def _verify_many(paths: list[Path], policy: Policy) -> Iterable[FileReport]:
    """Reports in order. Many small files go to worker processes one file each; a large
    file is split into chunks by verify_file itself."""
    jobs = policy.jobs if policy.jobs > 0 else (os.cpu_count() or 1)
    small = [p for p in paths if _size(p) < PARALLEL_MIN_BYTES]
    if jobs == 1 or len(small) < 2 or sum(map(_size, small)) < PARALLEL_MIN_BYTES:
        return (verify_file(p, policy) for p in paths)
    inner = dataclasses.replace(policy, jobs=1)  # every trusted key kind, in-process per file
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(jobs)
    pending = {p: pool.apply_async(verify_file, (p, inner)) for p in small}
    pool.close()

    def ordered() -> Iterable[FileReport]:
        try:
            for p in paths:
                yield pending[p].get() if p in pending else verify_file(p, policy)
        finally:
            pool.join()  # every task was queued and closed over: never terminate() mid-put

    return ordered()


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


# ---- for readers that check as they go (ledger tail --verify) --------------------------------


def parse_header(line: bytes) -> tuple[int, str, str, int, int] | None:
    """(seq, ts, kind, data start, data end) of a line (LF optional) in the v1 shape, or None.

    Shape only (section 2.2 header and trailer); the chain is not checked. ``kind`` is
    unescaped as a JSON reader would see it.
    """
    n = len(line) - 1 if line.endswith(b"\n") else len(line)
    m = _HEADER.match(line)
    if m is None or n < fmt.TRAILER_LEN + 20 or line[n - 76 : n - 66] != _CHAIN_KEY or line[n - 2 : n] != b'"}':
        return None
    ts_at = m.end(1) + 7  # after the seq digits: ,"ts":"
    kind = _unescape(m[2]).decode("utf-8", "replace")
    return int(m[1]), line[ts_at : ts_at + 27].decode("ascii"), kind, m.end(), n - 76


class IncrementalCheck:
    """The checks of section 5 for one file, fed in pieces: a prefix of the file, then
    batches of lines as they are written. Same code as verify_file; the Merkle tree is a
    compact range (O(log n) memory). Unsealed is not an error here (the file is live)."""

    def __init__(self, path: str, policy: Policy) -> None:
        self.path = path
        self._check = _FileCheck(path, dataclasses.replace(policy, allow_unsealed=True))

    @property
    def report(self) -> FileReport:
        """What holds so far (first_error set once something does not)."""
        return self._check.report

    @property
    def lines(self) -> int:
        return self._check.lines

    @property
    def last_chain(self) -> bytes:
        return self._check.last_chain

    @property
    def sealed(self) -> bool:
        return self._check.sealed_line is not None

    def root(self) -> bytes:
        """MTH of the lines that held so far."""
        return self._check.acc.root()

    def scan_prefix(self, end: int, source: str | None = None, jobs: int = 0) -> bool:
        """Check bytes [0, end) of the file (or of ``source``). Precondition: nothing fed yet
        and ``end`` at a line boundary. False once a line fails (see ``report``)."""
        if self.lines:
            raise ValueError("scan_prefix must come first")
        return all(self._check.chunk(c) for c in _scan_file(source or self.path, end, jobs))

    def feed(self, lines: list[bytes]) -> bool:
        """Check the next complete lines (without LF). False once one fails."""
        out = _Chunk()
        st = _Scan(self._check.last_chain, self._check.lines == 0)
        _scan_lines(lines, st, out)
        _finish(st, out)
        return self._check.chunk(out)

    def fail(self, line: int | None, seq: int | None, reason: str, detail: str) -> None:
        """Record a failure found by the caller (e.g. a broken prev link across files)."""
        self._check.fail(line, seq, reason, detail)


def verify_stream(stream, name: str, policy: Policy = Policy()) -> FileReport:
    """Verify a session read from a stream (e.g. a gzip object in a cold store), in one pass.

    ``stream`` needs only ``read(n)``; memory stays flat whatever its size.
    """
    counted = _CountingReader(stream)
    out = _Chunk()
    st = _Scan(fmt.ZERO_CHAIN, True)
    _scan_blocks(counted, 0, None, st, out)
    _finish(st, out)
    check = _FileCheck(name, policy)
    check.chunk(out)
    return check.finish(counted.count)


def verify_gzip(raw, name: str, policy: Policy = Policy()) -> FileReport:
    """A gzip-compressed session (an archived ``.ndjson.gz``), decompressed as it streams.
    A gzip that does not decompress is ``bad_gzip``: the archive is damaged."""
    try:
        report = verify_stream(gzip.GzipFile(fileobj=raw, mode="rb"), name, policy)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        return FileReport(path=name, first_error=FirstError(None, None, "bad_gzip", f"gzip does not decompress: {exc}"))
    report.notes.append("gzip-compressed: verified decompressed")
    return report


def verify_reader(stream, name: str, policy: Policy = Policy()) -> FileReport:
    """A session from a stream that cannot seek (standard input), plain or gzip-compressed
    (told by its first two bytes), in one pass."""
    head = b""
    while len(head) < 2 and (more := stream.read(2 - len(head))):
        head += more
    src = _Prefixed(head, stream)
    return verify_gzip(src, name, policy) if head == GZIP_MAGIC else verify_stream(src, name, policy)


class _Prefixed:
    """``prefix`` followed by ``stream``, for ``read(n)`` alone."""

    def __init__(self, prefix: bytes, stream) -> None:
        self.prefix = prefix
        self.stream = stream

    def read(self, n: int = -1) -> bytes:
        if self.prefix:
            out, self.prefix = (
                (self.prefix, b"") if n < 0 or n >= len(self.prefix) else (self.prefix[:n], self.prefix[n:])
            )
            return out if n < 0 or len(out) == n else out + self.stream.read(n - len(out))
        return self.stream.read(n)


class _CountingReader:
    def __init__(self, stream) -> None:
        self.stream = stream
        self.count = 0

    def read(self, n: int) -> bytes:
        data = self.stream.read(n)
        self.count += len(data)
        return data


def _ts_epoch_seconds(ts: str) -> float:
    from datetime import UTC, datetime

    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
