"""Inclusion and consistency proofs from a session file, and C2SP tlog-proof@v1.

``SessionTree.load(path)`` reads a session file once (up to its length at that
moment; a torn final line is left out) and keeps, per line, its leaf hash and byte
offset, plus the hashes of every perfect aligned subtree (64 bytes a leaf in all).
Each proof then costs O(log^2 n) hashes. The module functions (``inclusion``,
``consistency``, ``find_checkpoint``, ``tree_leaves``) load and answer once.

A proof is only issued against a checkpoint (``ledger.checkpoint`` or
``session.sealed``) that the file's own lines reproduce: its ``size`` equals its
seq and its ``root`` equals the tree of the lines before it. Signatures are the
verifier's business, not checked here.

tlog-proof text (c2sp.org/tlog-proof@v1; the entry goes in the spec's ``extra`` line,
base64 of the entry's line exactly as written, LF included)::

    c2sp.org/tlog-proof@v1
    extra <base64(line)>
    index <seq>
    <base64(hash)>            one per line, leaf's sibling first
    <empty line>
    <signed checkpoint note>

``verify_tlog_proof`` checks, in order: the proof's syntax; the note's signatures
(notes.open_note); the checkpoint text; the origin; the entry's shape and seq; the
inclusion of the entry's leaf hash in the checkpoint's root.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re
import zlib
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from . import format as fmt
from .errors import EvidenceError, InputError, UsageError
from .merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash, root_from_inclusion_proof
from .notes import OpenedNote, Verifier, open_note
from .reader import StoredEvent

TLOG_PROOF_HEADER = b"c2sp.org/tlog-proof@v1"
# A tree of fewer than 2**64 leaves has inclusion paths of at most 64 hashes.
MAX_PROOF_HASHES = 64
_BLOCK = 1 << 20

_decode_line = msgspec.json.Decoder(StoredEvent).decode
_TRAILER = re.compile(rb',"chain":"[0-9a-f]{64}"\}\n')
_TRAILER_BYTES = fmt.TRAILER_LEN + 1  # with the LF
_SEQ = re.compile(rb'\A\{"v":1,"seq":(0|[1-9][0-9]{0,18}),')
_DECIMAL = re.compile(rb"\A(0|[1-9][0-9]{0,18})\Z")
_INDEX = re.compile(rb"\Aindex (0|[1-9][0-9]{0,18})\Z")
_B64_HASH = re.compile(rb"\A[A-Za-z0-9+/]{43}=\Z")
_B64 = re.compile(rb"\A(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


class ProofError(EvidenceError):
    """A proof does not verify. ``reason``: malformed, origin_mismatch, bad_entry,
    index_mismatch, bad_proof (wrong length or index out of range), root_mismatch."""

    def __init__(self, message: str, *, reason: str, path: str = "", line: int | None = None) -> None:
        super().__init__(message, path=path, line=line)
        self.reason = reason


class CheckpointRef(NamedTuple):
    """A checkpoint or seal line of a session file."""

    origin: str
    size: int
    root: str  # hex
    sigs: list[fmt.Sig]
    line: int  # 1-based line number of the checkpoint line (its seq + 1)
    extension: bytes = b""  # a seal's ``ledger-seal`` line (SPEC 4.3); empty for a checkpoint

    def text(self) -> bytes:
        """The C2SP checkpoint body this line's signatures are over (a seal's with its extension)."""
        return fmt.checkpoint_text(self.origin, self.size, bytes.fromhex(self.root)) + self.extension


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")


@dataclass(frozen=True)
class InclusionProof:
    """Line ``index`` is leaf ``index`` of the tree of checkpoint ``size``."""

    origin: str
    index: int
    entry: bytes  # the line exactly as written, LF included
    leaf: bytes  # leaf_hash(E_index)
    path: list[bytes]  # RFC 6962 PATH, sibling nearest the leaf first
    size: int
    root: bytes
    sigs: list[fmt.Sig] = field(default_factory=list)
    checkpoint_line: int = 0  # 1-based line of the checkpoint in the file
    extension: bytes = b""  # the seal's extension line when the checkpoint is a seal

    def checkpoint_text(self) -> bytes:
        """The signed text of the checkpoint the proof is against."""
        return fmt.checkpoint_text(self.origin, self.size, self.root) + self.extension

    def as_dict(self) -> dict:
        """JSON-ready (hashes hex, entry base64), for ``--json`` output."""
        return {
            "type": "inclusion",
            "origin": self.origin,
            "index": self.index,
            "entry": _b64(self.entry),
            "leaf": self.leaf.hex(),
            "proof": [h.hex() for h in self.path],
            "size": self.size,
            "root": self.root.hex(),
            "sigs": [msgspec.structs.asdict(s) for s in self.sigs],
            "checkpoint_line": self.checkpoint_line,
        }


@dataclass(frozen=True)
class ConsistencyProof:
    """The tree of ``old_size`` is a prefix of the tree of checkpoint ``new_size``.

    ``old_root`` is what this file says; a verifier must use the root it saved itself.
    """

    origin: str
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    path: list[bytes]  # RFC 6962 PROOF(old_size, D[new_size])
    sigs: list[fmt.Sig] = field(default_factory=list)
    checkpoint_line: int = 0

    def as_dict(self) -> dict:
        return {
            "type": "consistency",
            "origin": self.origin,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": self.old_root.hex(),
            "new_root": self.new_root.hex(),
            "proof": [h.hex() for h in self.path],
            "sigs": [msgspec.structs.asdict(s) for s in self.sigs],
            "checkpoint_line": self.checkpoint_line,
        }


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _gunzipped(f, size: int):
    """(reader, bytes to read): an archived ``.ndjson.gz`` (by its magic bytes) decompressed,
    to its end; a plain file as it is, up to ``size``."""
    magic = f.read(2)
    f.seek(0)
    if magic != b"\x1f\x8b":
        return f, size
    return gzip.GzipFile(fileobj=f), float("inf")


class SessionTree:
    """One session file, scanned once: leaf hashes, line offsets, checkpoints, origin."""

    def __init__(self, path: str, leaves: bytearray, offsets: array, origin: str, checkpoints: list[CheckpointRef]):
        self.path = path
        self.origin = origin
        self.checkpoints = checkpoints  # in file order
        self._offsets = offsets  # offsets[i] = byte offset of line i; offsets[n] = end of line n-1
        # _levels[j] holds the 32-byte hashes of the perfect subtrees of 2**j leaves, in order.
        self._levels = [leaves]
        while len(self._levels[-1]) >= 2 * HASH_SIZE:
            below = self._levels[-1]
            above = bytearray(len(below) // (2 * HASH_SIZE) * HASH_SIZE)
            for i in range(0, len(above), HASH_SIZE):
                above[i : i + HASH_SIZE] = hashlib.sha256(b"\x01" + below[2 * i : 2 * i + 2 * HASH_SIZE]).digest()
            self._levels.append(above)

    @property
    def size(self) -> int:
        """Number of complete lines."""
        return len(self._levels[0]) // HASH_SIZE

    # ---- reading ---------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SessionTree:
        """Scan ``path`` up to its current length. Raises InputError (unreadable, no
        complete line) or EvidenceError (a line that is not a ledger line, a bad line 0)."""
        name = os.fspath(path)
        leaves = bytearray()
        offsets = array("Q", [0])
        checkpoints: list[CheckpointRef] = []
        origin = ""
        seq = 0
        try:
            with open(name, "rb") as f:
                remaining = os.fstat(f.fileno()).st_size  # the length now: never read past it
                f, remaining = _gunzipped(f, remaining)
                carry = b""
                pos = 0
                while remaining > 0 and (block := f.read(min(_BLOCK, remaining))):
                    remaining -= len(block)
                    data = carry + block
                    start = 0
                    while (end := data.find(b"\n", start)) >= 0:
                        line = data[start : end + 1]
                        start = end + 1
                        pos += len(line)
                        origin = cls._take_line(name, seq, line, leaves, origin, checkpoints)
                        offsets.append(pos)
                        seq += 1
                    carry = data[start:]
                    if len(carry) > fmt.MAX_LINE_BYTES:
                        raise EvidenceError("line longer than 16 MiB", path=name, line=seq + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        if seq == 0:
            raise InputError(f"{name}: no complete line")
        return cls(name, leaves, offsets, origin, checkpoints)

    @staticmethod
    def _take_line(
        name: str, seq: int, line: bytes, leaves: bytearray, origin: str, checkpoints: list[CheckpointRef]
    ) -> str:
        if not _TRAILER.fullmatch(line, len(line) - _TRAILER_BYTES):
            raise EvidenceError("not a ledger line (no chain member at its end)", path=name, line=seq + 1)
        leaves += leaf_hash(fmt.event_of_line(line))
        try:
            event = _decode_line(line)
        except msgspec.DecodeError:
            raise EvidenceError("malformed line", path=name, line=seq + 1) from None
        if seq == 0:
            if event.kind != fmt.KIND_OPENED:
                raise EvidenceError("line 1 is not session.opened", path=name, line=1)
            try:
                return fmt.decode_opened(event.data).origin
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise EvidenceError("bad session.opened data", path=name, line=1) from None
        if event.kind in fmt.SIGNED_KINDS:
            try:
                cp = fmt.decode_checkpoint(event.kind, event.data)
                extension = fmt.seal_extension(cp.reason, cp.dropped) if isinstance(cp, fmt.Sealed) else b""
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                return origin  # not a usable checkpoint; the verifier reports it
            checkpoints.append(CheckpointRef(origin, cp.size, cp.root, list(cp.sigs), seq + 1, extension))
        return origin

    def leaf_hashes(self) -> list[bytes]:
        buf = self._levels[0]
        return [bytes(buf[i : i + HASH_SIZE]) for i in range(0, len(buf), HASH_SIZE)]

    def line_bytes(self, seq: int) -> bytes:
        """Line ``seq`` as written (LF included), re-read and checked against the scan."""
        if not 0 <= seq < self.size:
            raise UsageError(f"no line with seq {seq} ({self.size} complete lines)")
        start, end = self._offsets[seq], self._offsets[seq + 1]
        try:
            with open(self.path, "rb") as f:
                f, _ = _gunzipped(f, 0)  # a gzip session: seek in the decompressed stream
                f.seek(start)
                line = f.read(end - start)
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror}") from None
        if leaf_hash(fmt.event_of_line(line)) != self._node(0, seq):
            raise EvidenceError("the file changed while proofs were made", path=self.path, line=seq + 1)
        return line

    # ---- the tree --------------------------------------------------------------------

    def _node(self, level: int, index: int) -> bytes:
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _mth(self, begin: int, end: int) -> bytes:
        """MTH of leaves [begin, end). Precondition: begin is a multiple of a power of
        two >= end - begin (true of every range RFC 6962's recursion visits)."""
        n = end - begin
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self._node(level, begin >> level)
        k = _split(n)
        return node_hash(self._mth(begin, begin + k), self._mth(begin + k, end))

    def root(self, size: int) -> bytes:
        """MTH of the first ``size`` lines. Precondition: 0 <= size <= self.size."""
        if not 0 <= size <= self.size:
            raise UsageError(f"tree size {size} out of range 0..{self.size}")
        return self._mth(0, size)

    def _path(self, m: int, begin: int, end: int) -> list[bytes]:
        """RFC 6962 PATH(m, D[begin:end])."""
        if end - begin == 1:
            return []
        k = _split(end - begin)
        if m < k:
            return self._path(m, begin, begin + k) + [self._mth(begin + k, end)]
        return self._path(m - k, begin + k, end) + [self._mth(begin, begin + k)]

    def _subproof(self, m: int, begin: int, end: int, complete: bool) -> list[bytes]:
        """RFC 6962 SUBPROOF(m, D[begin:end], complete)."""
        n = end - begin
        if m == n:
            return [] if complete else [self._mth(begin, end)]
        k = _split(n)
        if m <= k:
            return self._subproof(m, begin, begin + k, complete) + [self._mth(begin + k, end)]
        return self._subproof(m - k, begin + k, end, False) + [self._mth(begin, begin + k)]

    def inclusion_path(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]). Precondition: 0 <= index < size <= self.size."""
        if not 0 <= index < size <= self.size:
            raise UsageError(f"no inclusion proof for index {index} in a tree of size {size}")
        return self._path(index, 0, size)

    def consistency_path(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]). Precondition: 0 < old_size <= new_size <= self.size."""
        if not 0 < old_size <= new_size <= self.size:
            raise UsageError(f"no consistency proof from size {old_size} to {new_size}")
        return self._subproof(old_size, 0, new_size, True)

    # ---- checkpoints and proofs ------------------------------------------------------

    def checkpoint(self, size: int | None = None) -> CheckpointRef:
        """The checkpoint of ``size`` (default: the last in the file), checked against the
        file: its size is its seq and its root the tree of the lines before it.
        Raises UsageError if there is none, EvidenceError if it does not match."""
        if size is None:
            if not self.checkpoints:
                raise UsageError(f"{self.path}: no checkpoint")
            cp = self.checkpoints[-1]
        else:
            found = [c for c in self.checkpoints if c.size == size]
            if not found:
                sizes = ", ".join(str(c.size) for c in self.checkpoints[-8:]) or "none"
                raise UsageError(f"{self.path}: no checkpoint of size {size} (last sizes: {sizes})")
            cp = found[0]
        if cp.size != cp.line - 1:
            raise EvidenceError(f"checkpoint says size {cp.size} at seq {cp.line - 1}", path=self.path, line=cp.line)
        if cp.root != self.root(cp.size).hex():
            raise EvidenceError(
                f"checkpoint root does not match the tree of the {cp.size} lines before it",
                path=self.path,
                line=cp.line,
            )
        return cp

    def inclusion(self, seq: int, size: int | None = None) -> InclusionProof:
        """Proof that line ``seq`` is in the checkpoint of ``size`` (default: the last)."""
        cp = self.checkpoint(size)
        if not 0 <= seq < cp.size:
            raise UsageError(f"line seq {seq} is not covered by the checkpoint of size {cp.size}")
        entry = self.line_bytes(seq)
        return InclusionProof(
            origin=cp.origin,
            index=seq,
            entry=entry,
            leaf=self._node(0, seq),
            path=self.inclusion_path(seq, cp.size),
            size=cp.size,
            root=bytes.fromhex(cp.root),
            sigs=cp.sigs,
            checkpoint_line=cp.line,
            extension=cp.extension,
        )

    def consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``old_size`` is a prefix of the checkpoint of ``new_size``."""
        cp = self.checkpoint(new_size)
        if not 0 < old_size <= cp.size:
            raise UsageError(f"old size must be 1..{cp.size}, not {old_size}")
        return ConsistencyProof(
            origin=cp.origin,
            old_size=old_size,
            new_size=cp.size,
            old_root=self.root(old_size),
            new_root=bytes.fromhex(cp.root),
            path=self.consistency_path(old_size, cp.size),
            sigs=cp.sigs,
            checkpoint_line=cp.line,
        )


def tree_leaves(path: str | os.PathLike[str]) -> list[bytes]:
    """Leaf hashes of every complete line of a session file."""
    return SessionTree.load(path).leaf_hashes()


def find_checkpoint(path: str | os.PathLike[str], size: int | None = None) -> CheckpointRef:
    """The checkpoint or seal of ``size`` (default: the last), checked against the file."""
    return SessionTree.load(path).checkpoint(size)


def inclusion(path: str | os.PathLike[str], seq: int, size: int | None = None) -> InclusionProof:
    return SessionTree.load(path).inclusion(seq, size)


def consistency(path: str | os.PathLike[str], old_size: int, new_size: int | None = None) -> ConsistencyProof:
    return SessionTree.load(path).consistency(old_size, new_size)


# ---- checkpoint text -------------------------------------------------------------------


def parse_checkpoint_text(text: bytes) -> tuple[str, int, bytes]:
    """(origin, size, root) of a C2SP tlog-checkpoint body; raises ProofError(malformed).

    At least three non-empty lines, text ending in LF: a non-empty origin, the size
    in decimal without leading zeros, base64 of a 32-byte root; extension lines
    (non-empty) are allowed and ignored.
    """
    if not text.endswith(b"\n"):
        raise ProofError("checkpoint text does not end in a newline", reason="malformed")
    lines = text[:-1].split(b"\n")
    if len(lines) < 3 or not all(lines):
        raise ProofError("checkpoint needs origin, size and root on non-empty lines", reason="malformed")
    try:
        origin = lines[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ProofError("checkpoint origin is not UTF-8", reason="malformed") from None
    if not _DECIMAL.match(lines[1]):
        raise ProofError("checkpoint size is not a decimal without leading zeros", reason="malformed")
    if not _B64_HASH.match(lines[2]):
        raise ProofError("checkpoint root is not base64 of 32 bytes", reason="malformed")
    return origin, int(lines[1]), base64.b64decode(lines[2], validate=True)


# ---- tlog-proof@v1 ----------------------------------------------------------------------


@dataclass(frozen=True)
class TlogProof:
    """The parts of a tlog-proof, parsed but not verified."""

    index: int
    path: list[bytes]
    note: bytes  # the signed checkpoint, verbatim
    extra: bytes | None = None  # for ledger: the entry's line as written


@dataclass(frozen=True)
class TlogProofResult:
    """What a verified tlog-proof shows."""

    origin: str
    size: int
    root: bytes
    index: int
    entry: bytes  # the line as written
    event: bytes  # E_index, the bytes the leaf hash is over
    leaf: bytes
    verified: list[str]  # names of the trusted keys that signed the checkpoint
    unknown: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "ok": True,
            "origin": self.origin,
            "size": self.size,
            "root": self.root.hex(),
            "index": self.index,
            "entry": _b64(self.entry),
            "leaf": self.leaf.hex(),
            "verified": self.verified,
            "unknown": self.unknown,
        }


def _note_text(note: bytes) -> bytes:
    split = note.rfind(b"\n\n")
    return note[: split + 1] if split >= 0 else b""


def encode_tlog_proof(p: InclusionProof, note: bytes) -> bytes:
    """The tlog-proof@v1 text of ``p`` with its signed checkpoint ``note``.

    Precondition: the note's text is p's checkpoint text (checked; ValueError).
    """
    if _note_text(note) != p.checkpoint_text():
        raise ValueError("the note is not a signed checkpoint of this proof's tree")
    lines = [TLOG_PROOF_HEADER, b"extra " + base64.b64encode(p.entry), b"index %d" % p.index]
    lines += [base64.b64encode(h) for h in p.path]
    return b"\n".join(lines) + b"\n\n" + note


def parse_tlog_proof(data: bytes) -> TlogProof:
    """Parse tlog-proof@v1 text (syntax only); raises ProofError(malformed)."""
    split = data.find(b"\n\n")
    if split < 0:
        raise ProofError("no empty line before the checkpoint", reason="malformed")
    head, note = data[:split].split(b"\n"), data[split + 2 :]
    if head[0] != TLOG_PROOF_HEADER:
        raise ProofError("first line is not c2sp.org/tlog-proof@v1", reason="malformed")
    rest = head[1:]
    extra = None
    if rest and rest[0].startswith(b"extra "):
        value = rest[0][len(b"extra ") :]
        if not value or not _B64.match(value):
            raise ProofError("extra is not base64", reason="malformed")
        extra = base64.b64decode(value, validate=True)
        rest = rest[1:]
    m = _INDEX.match(rest[0]) if rest else None
    if m is None:
        raise ProofError("no 'index <n>' line", reason="malformed")
    hashes = rest[1:]
    if len(hashes) > MAX_PROOF_HASHES:
        raise ProofError(f"more than {MAX_PROOF_HASHES} proof hashes", reason="malformed")
    if not all(_B64_HASH.match(h) for h in hashes):
        raise ProofError("a proof line is not base64 of a 32-byte hash", reason="malformed")
    if not note:
        raise ProofError("no checkpoint after the empty line", reason="malformed")
    path = [base64.b64decode(h, validate=True) for h in hashes]
    return TlogProof(index=int(m.group(1)), path=path, note=note, extra=extra)


def verify_tlog_proof(data: bytes, verifiers: Iterable[Verifier], origin: str | None = None) -> TlogProofResult:
    """Verify a ledger tlog-proof against trusted Ed25519 note keys.

    1. parse the proof; 2. open the checkpoint note (notes.NoteError on a bad or
    missing trusted signature); 3. parse the checkpoint text; 4. its origin equals
    ``origin`` when given; 5. ``extra`` is a complete ledger line whose seq is the
    index; 6. leaf_hash(E_index) with the path gives the checkpoint's root.
    Every failure raises an EvidenceError (ProofError or NoteError).
    """
    proof = parse_tlog_proof(data)
    opened: OpenedNote = open_note(proof.note, list(verifiers))
    cp_origin, size, root = parse_checkpoint_text(opened.text)
    if origin is not None and cp_origin != origin:
        raise ProofError(f"checkpoint origin {cp_origin!r} is not {origin!r}", reason="origin_mismatch")
    entry = proof.extra
    if entry is None or entry.count(b"\n") != 1 or not _TRAILER.fullmatch(entry, len(entry) - _TRAILER_BYTES):
        raise ProofError("extra does not hold one complete ledger line", reason="bad_entry")
    event = fmt.event_of_line(entry)
    m = _SEQ.match(event)
    if m is None:
        raise ProofError("entry does not start with a ledger v1 header", reason="bad_entry")
    if int(m.group(1)) != proof.index:
        raise ProofError(f"entry has seq {int(m.group(1))}, proof index is {proof.index}", reason="index_mismatch")
    leaf = leaf_hash(event)
    calculated = root_from_inclusion_proof(leaf, proof.index, size, proof.path)
    if calculated is None:
        raise ProofError(
            f"inclusion proof of {len(proof.path)} hashes does not fit index {proof.index} in size {size}",
            reason="bad_proof",
        )
    if calculated != root:
        raise ProofError("inclusion proof does not lead to the checkpoint's root", reason="root_mismatch")
    return TlogProofResult(
        origin=cp_origin,
        size=size,
        root=root,
        index=proof.index,
        entry=entry,
        event=event,
        leaf=leaf,
        verified=opened.verified,
        unknown=opened.unknown,
    )


__all__ = [
    "TLOG_PROOF_HEADER",
    "CheckpointRef",
    "ConsistencyProof",
    "InclusionProof",
    "ProofError",
    "SessionTree",
    "TlogProof",
    "TlogProofResult",
    "consistency",
    "encode_tlog_proof",
    "find_checkpoint",
    "inclusion",
    "parse_checkpoint_text",
    "parse_tlog_proof",
    "tree_leaves",
    "verify_tlog_proof",
]
