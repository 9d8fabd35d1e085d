"""RFC 6962 (RFC 9162 section 2.1) Merkle tree hashing, proofs and compact ranges.

Pure functions over 32-byte SHA-256 hashes; no I/O. Names follow the RFC and
transparency-dev/merkle so the code can be read side by side with them:

* ``leaf_hash`` / ``node_hash``: the two domain-separated hashes.
* ``root``: MTH over a list of leaf hashes (the reference definition, O(n) memory;
  used by tests, proofs and small trees).
* ``inclusion_proof`` / ``verify_inclusion``: RFC 6962 PATH and its check.
* ``consistency_proof`` / ``verify_consistency``: RFC 6962 PROOF and its check.
* ``CompactRange``: the perfect subtrees covering leaves [begin, end), appendable
  and mergeable; ``Accumulator`` is the range starting at 0, whose root is MTH_n,
  in O(log n) memory. The verifier splits a file between processes, each folds
  its part into a range, and the parent merges them.

Verification functions never raise on bad input: a malformed proof (wrong length,
hash not 32 bytes, index out of range) simply does not verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_node_state = hashlib.sha256(b"\x01").copy  # copying a state beats creating one
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes; MTH of no leaves is SHA-256("")."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 PATH(index, D[n]), sibling nearest the leaf first.

    Precondition: 0 <= index < len(leaf_hashes).
    """
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"index {index} out of range for tree size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return inclusion_proof(leaf_hashes[:k], index) + [root(leaf_hashes[k:])]
    return inclusion_proof(leaf_hashes[k:], index - k) + [root(leaf_hashes[:k])]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[n]).

    Precondition: 0 < old_size <= len(leaf_hashes). Equal sizes give an empty proof.
    """
    n = len(leaf_hashes)
    if not 0 < old_size <= n:
        raise ValueError(f"old size {old_size} out of range for tree size {n}")
    return _subproof(old_size, leaf_hashes, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return _subproof(m, leaves[:k], complete) + [root(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [root(leaves[:k])]


def _valid_hashes(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes | bytearray) and len(h) == HASH_SIZE for h in hashes)


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root implied by an inclusion proof, or None if the proof is malformed.

    RFC 9162 2.1.3.2. Precondition checked: 0 <= index < size, every hash 32 bytes,
    and the proof length exactly the one a tree of this size needs.
    """
    if not (0 <= index < size) or not _valid_hashes(leaf, *proof):
        return None
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    if len(proof) != inner + border:
        return None
    h = leaf
    for i, sibling in enumerate(proof[:inner]):
        h = node_hash(sibling, h) if (index >> i) & 1 else node_hash(h, sibling)
    for sibling in proof[inner:]:
        h = node_hash(sibling, h)
    return h


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True if ``proof`` shows leaf ``index`` of a tree of ``size`` hashes to ``root``."""
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    return calculated is not None and _valid_hashes(root) and calculated == root


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> bool:
    """True if ``proof`` shows the tree of ``old_size`` is a prefix of ``new_size``.

    RFC 9162 2.1.4.2. Rejected as meaningless: old_size 0, old_size > new_size,
    equal sizes with a non-empty proof, different sizes with an empty proof.
    """
    if not _valid_hashes(*proof):
        return False
    if old_size <= 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    # RFC 9162 2.1.4.2, step by step.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


class CompactRange:
    """The perfect subtrees covering leaves [begin, end), left to right.

    ``nodes`` holds (level, index, hash) with the subtree at ``level`` covering leaves
    [index << level, (index + 1) << level). Appending merges siblings as they
    complete, so a range starting at 0 keeps one node per set bit of ``end``.
    """

    __slots__ = ("begin", "end", "nodes")

    def __init__(self, begin: int = 0) -> None:
        self.begin = begin
        self.end = begin
        self.nodes: list[tuple[int, int, bytes]] = []

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash (leaf index ``end``)."""
        self._push(0, self.end, leaf)
        self.end += 1

    def _push(self, level: int, index: int, h: bytes) -> None:
        nodes = self.nodes
        while index & 1 and nodes and nodes[-1][0] == level and nodes[-1][1] == index - 1:
            h = node_hash(nodes.pop()[2], h)
            level += 1
            index >>= 1
        nodes.append((level, index, h))

    def extend(self, other: CompactRange) -> None:
        """Append the adjacent range ``other`` (precondition: other.begin == self.end)."""
        if other.begin != self.end:
            raise ValueError(f"ranges not adjacent: {self.end} != {other.begin}")
        for level, index, h in other.nodes:
            self._push(level, index, h)
        self.end = other.end

    def copy(self) -> CompactRange:
        clone = CompactRange(self.begin)
        clone.end = self.end
        clone.nodes = list(self.nodes)
        return clone

    def root(self) -> bytes:
        """MTH of leaves [0, end). Precondition: begin == 0."""
        if self.begin != 0:
            raise ValueError("root() needs a range starting at leaf 0")
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1][2]
        for _, _, left in reversed(self.nodes[:-1]):
            h = node_hash(left, h)
        return h


class Accumulator:
    """An append-only Merkle tree from leaf 0 in O(log n) memory: ``append``, ``size``, ``root``.

    The stack holds one perfect subtree hash per set bit of ``size``, largest first;
    levels follow from the bits, so appending is a few integer operations and on
    average one node hash (the writer does this once per event).
    """

    __slots__ = ("_stack", "_size")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    @property
    def begin(self) -> int:
        return 0

    @property
    def end(self) -> int:
        return self._size

    @property
    def nodes(self) -> list[tuple[int, int, bytes]]:
        """(level, index, hash) of the stacked subtrees, as in CompactRange."""
        levels = [lv for lv in range(self._size.bit_length() - 1, -1, -1) if self._size >> lv & 1]
        out, start = [], 0
        for lv, h in zip(levels, self._stack, strict=True):
            out.append((lv, start >> lv, h))
            start += 1 << lv
        return out

    def append(self, leaf: bytes) -> None:
        # _push(0, leaf), inlined: the writer calls this once per event.
        stack = self._stack
        n = self._size
        h = leaf
        while n & 1:
            node = _node_state()
            node.update(stack.pop())
            node.update(h)
            h = node.digest()
            n >>= 1
        stack.append(h)
        self._size += 1

    def _push(self, level: int, h: bytes) -> None:
        """Add a perfect subtree of 2**level leaves. Precondition: size % 2**level == 0."""
        stack = self._stack
        n = self._size >> level
        while n & 1:
            h = _sha256(_NODE_PREFIX + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self._size += 1 << level

    def extend(self, other: CompactRange) -> None:
        """Append the adjacent range ``other`` (precondition: other.begin == size)."""
        if other.begin != self._size:
            raise ValueError(f"ranges not adjacent: {self._size} != {other.begin}")
        for level, _, h in other.nodes:
            self._push(level, h)

    def copy(self) -> Accumulator:
        clone = Accumulator()
        clone._stack = list(self._stack)
        clone._size = self._size
        return clone

    def root(self) -> bytes:
        """MTH of every leaf appended so far."""
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        h = stack[-1]
        for left in reversed(stack[:-1]):
            h = node_hash(left, h)
        return h
