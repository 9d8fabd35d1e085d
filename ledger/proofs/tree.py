"""Inclusion and consistency proofs from a session file (RFC 6962).

``SessionTree.load(path)`` reads a session file once (up to its length at that
moment; a torn final line is left out) and keeps, per line, its leaf hash and byte
offset, plus the hashes of every perfect aligned subtree (64 bytes a leaf in all).
Each proof then costs O(log^2 n) hashes. The module functions (``inclusion``,
``consistency``, ``find_checkpoint``, ``tree_leaves``) load and answer once.

A proof is only issued against a checkpoint (``ledger.checkpoint`` or
``session.sealed``) that the file's own lines reproduce: its ``size`` equals its
seq and its ``root`` equals the tree of the lines before it. Signatures are the
verifier's business, not checked here.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import re
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import msgspec

from .. import format as fmt
from ..errors import EvidenceError, InputError, UsageError
from ..merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from ..reader import StoredEvent

_BLOCK = 1 << 20

_decode_line = msgspec.json.Decoder(StoredEvent).decode
# Every complete ledger line ends with its chain member and LF (SPEC 2.2).
TRAILER = re.compile(rb',"chain":"[0-9a-f]{64}"\}\n')
TRAILER_BYTES = fmt.TRAILER_LEN + 1  # with the LF


def has_trailer(line: bytes) -> bool:
    """``line`` ends in ``,"chain":"<64 hex>"}`` LF, as every complete ledger line does."""
    return TRAILER.fullmatch(line, len(line) - TRAILER_BYTES) is not None


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


def _complete_lines(f, remaining: float, name: str) -> Iterator[bytes]:
    """The complete lines (LF included) in the first ``remaining`` bytes of ``f``, read
    in blocks; a torn final line is left out. Raises EvidenceError on a line longer
    than MAX_LINE_BYTES, without buffering it."""
    carry = b""
    count = 0
    while remaining > 0 and (block := f.read(min(_BLOCK, remaining))):
        remaining -= len(block)
        data = carry + block
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            yield data[start : end + 1]
            start = end + 1
            count += 1
        carry = data[start:]
        if len(carry) > fmt.MAX_LINE_BYTES:
            raise EvidenceError("line longer than 16 MiB", path=name, line=count + 1)


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
                for line in _complete_lines(f, remaining, name):
                    origin = cls._take_line(name, seq, line, leaves, origin, checkpoints)
                    offsets.append(offsets[-1] + len(line))
                    seq += 1
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"cannot read {name}: {getattr(exc, 'strerror', None) or exc}") from None
        if seq == 0:
            raise InputError(f"{name}: no complete line")
        return cls(name, leaves, offsets, origin, checkpoints)

    @staticmethod
    def _take_line(
        name: str, seq: int, line: bytes, leaves: bytearray, origin: str, checkpoints: list[CheckpointRef]
    ) -> str:
        if not has_trailer(line):
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
