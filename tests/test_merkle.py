"""Tests for ledger.merkle (RFC 6962 / RFC 9162 section 2.1).

Four layers, each catching what the previous one cannot:

1. The published RFC 6962 vectors (8-leaf tree) and the 196 transparency-dev/merkle
   verifier probes, read from tests/vectors/ (see the README there).
2. A deliberately naive reference implementation written here from the RFC text
   (raw entries in, its own hashing), compared with the module on every size up to 70.
3. Hypothesis properties: generated proofs verify, altered proofs do not.
4. CompactRange / Accumulator: ranges built in pieces and merged give the same root.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle

VECTORS = Path(__file__).resolve().parent / "vectors"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "conformance"
RFC = json.loads((VECTORS / "rfc6962.json").read_text(encoding="utf-8"))
PROBES = json.loads((VECTORS / "rfc6962_probes.json").read_text(encoding="utf-8"))

RFC_ENTRIES = [bytes.fromhex(x) for x in RFC["leaves_hex"]]
RFC_LEAVES = [merkle.leaf_hash(e) for e in RFC_ENTRIES]
RFC_ROOTS = {0: RFC["empty_root_hex"], **{int(k): v for k, v in RFC["roots_hex"].items()}}

PROPERTY = settings(max_examples=100, deadline=None)


def _hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def _flip(h: bytes, bit: int) -> bytes:
    """``h`` with bit number ``bit`` (0 = lowest bit of the first byte) inverted."""
    out = bytearray(h)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- A deliberately naive reference implementation, straight from RFC 6962 2.1. ---
# Works on raw entries (not leaf hashes), hashes with hashlib directly and finds k by
# counting, so it shares no code with ledger.merkle. Slow on purpose; small n only.


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _naive_k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(entries: list[bytes]) -> bytes:
    """MTH(D[n]) as RFC 6962 2.1 defines it."""
    n = len(entries)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return _sha256(b"\x00" + entries[0])
    k = _naive_k(n)
    return _sha256(b"\x01" + naive_mth(entries[:k]) + naive_mth(entries[k:]))


def naive_path(m: int, entries: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) as RFC 6962 2.1.1 defines it."""
    n = len(entries)
    if n == 1:
        return []
    k = _naive_k(n)
    if m < k:
        return naive_path(m, entries[:k]) + [naive_mth(entries[k:])]
    return naive_path(m - k, entries[k:]) + [naive_mth(entries[:k])]


def naive_proof(m: int, entries: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) as RFC 6962 2.1.2 defines it."""

    def subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
        n = len(entries)
        if m == n:
            return [] if b else [naive_mth(entries)]
        k = _naive_k(n)
        if m <= k:
            return subproof(m, entries[:k], b) + [naive_mth(entries[k:])]
        return subproof(m - k, entries[k:], False) + [naive_mth(entries[:k])]

    return subproof(m, entries, True)


def _entries(n: int) -> list[bytes]:
    """n distinct entries, including the empty one, of varied lengths."""
    return [b""] + [f"entry {i}".encode() * (i % 3 + 1) for i in range(1, n)] if n else []


# --- 1a. The RFC 6962 vectors. -------------------------------------------------------


def test_empty_root_is_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert bytes.fromhex(RFC["empty_root_hex"]) == merkle.EMPTY_ROOT
    assert merkle.root([]) == merkle.EMPTY_ROOT
    assert merkle.Accumulator().root() == merkle.EMPTY_ROOT


def test_vector_node_hashes() -> None:
    """node_hashes_hex[level][index] is the perfect subtree over its 2**level leaves."""
    assert [h.hex() for h in RFC_LEAVES] == RFC["node_hashes_hex"][0]
    for level, row in enumerate(RFC["node_hashes_hex"]):
        for index, want in enumerate(row):
            span = RFC_LEAVES[index << level : (index + 1) << level]
            assert merkle.root(span).hex() == want, (level, index)
    h = RFC["node_hashes_hex"]
    assert merkle.node_hash(bytes.fromhex(h[0][0]), bytes.fromhex(h[0][1])).hex() == h[1][0]


@pytest.mark.parametrize("n", range(9))
def test_vector_roots(n: int) -> None:
    want = bytes.fromhex(RFC_ROOTS[n])
    assert merkle.root(RFC_LEAVES[:n]) == want
    acc = merkle.Accumulator()
    for leaf in RFC_LEAVES[:n]:
        acc.append(leaf)
    assert acc.size == n
    assert acc.root() == want


@pytest.mark.parametrize("vec", RFC["inclusion"], ids=lambda v: f"leaf{v['leaf_index']}-of-{v['tree_size']}")
def test_vector_inclusion(vec: dict) -> None:
    index, size = vec["leaf_index"], vec["tree_size"]
    proof = _hexes(vec["proof_hex"])
    leaf, root = bytes.fromhex(vec["leaf_hash_hex"]), bytes.fromhex(vec["root_hex"])
    assert leaf == RFC_LEAVES[index]
    assert root == bytes.fromhex(RFC_ROOTS[size])
    assert merkle.inclusion_proof(RFC_LEAVES[:size], index) == proof
    assert merkle.verify_inclusion(leaf, index, size, proof, root) is True
    assert merkle.root_from_inclusion_proof(leaf, index, size, proof) == root


@pytest.mark.parametrize("vec", RFC["consistency"], ids=lambda v: f"{v['size1']}-to-{v['size2']}")
def test_vector_consistency(vec: dict) -> None:
    size1, size2 = vec["size1"], vec["size2"]
    proof = _hexes(vec["proof_hex"])
    root1, root2 = bytes.fromhex(vec["root1_hex"]), bytes.fromhex(vec["root2_hex"])
    assert root1 == bytes.fromhex(RFC_ROOTS[size1])
    assert root2 == bytes.fromhex(RFC_ROOTS[size2])
    assert merkle.consistency_proof(RFC_LEAVES[:size2], size1) == proof
    assert merkle.verify_consistency(size1, size2, root1, root2, proof) is True


# --- 1b. The transparency-dev/merkle verifier probes. ---------------------------------


def _probe_id(probe: dict) -> str:
    return probe["source"].removeprefix("testdata/").removesuffix(".json")


def test_probe_counts() -> None:
    """Guards against a truncated copy: 98 + 98 probes, 6 + 6 of them valid."""
    for kind in ("inclusion_probes", "consistency_probes"):
        probes = PROBES[kind]
        assert len(probes) == 98
        assert sum(not p["want_err"] for p in probes) == 6
        assert len({_probe_id(p) for p in probes}) == 98


@pytest.mark.parametrize("probe", PROBES["inclusion_probes"], ids=_probe_id)
def test_inclusion_probe(probe: dict) -> None:
    got = merkle.verify_inclusion(
        bytes.fromhex(probe["leaf_hash_hex"]),
        probe["leaf_index"],
        probe["tree_size"],
        _hexes(probe["proof_hex"]),
        bytes.fromhex(probe["root_hex"]),
    )
    assert got is (not probe["want_err"]), probe["desc"]


@pytest.mark.parametrize("probe", PROBES["consistency_probes"], ids=_probe_id)
def test_consistency_probe(probe: dict) -> None:
    got = merkle.verify_consistency(
        probe["size1"],
        probe["size2"],
        bytes.fromhex(probe["root1_hex"]),
        bytes.fromhex(probe["root2_hex"]),
        _hexes(probe["proof_hex"]),
    )
    assert got is (not probe["want_err"]), probe["desc"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/conformance not present (e.g. CI)")
@pytest.mark.parametrize("name", ["rfc6962.json", "rfc6962_probes.json"])
def test_vector_copies_match_shared(name: str) -> None:
    """When the shared conformance folder is around, the vendored copies must not drift."""
    assert (VECTORS / name).read_bytes() == (SHARED / name).read_bytes()


# --- 2. The naive reference implementation. ------------------------------------------


def test_naive_reference_matches_vectors() -> None:
    """Check the checker: the naive MTH reproduces the published roots."""
    for n, want in RFC_ROOTS.items():
        assert naive_mth(RFC_ENTRIES[:n]).hex() == want, n


@pytest.mark.parametrize("n", range(71))
def test_root_and_accumulator_match_naive_mth(n: int) -> None:
    entries = _entries(n)
    leaves = [merkle.leaf_hash(e) for e in entries]
    want = naive_mth(entries)
    assert merkle.root(leaves) == want
    acc = merkle.Accumulator()
    for leaf in leaves:
        acc.append(leaf)
    assert acc.size == n
    assert acc.root() == want


def test_proofs_match_naive_path_and_proof() -> None:
    """inclusion_proof / consistency_proof equal RFC PATH / PROOF for every n <= 33."""
    for n in range(1, 34):
        entries = _entries(n)
        leaves = [merkle.leaf_hash(e) for e in entries]
        for i in range(n):
            assert merkle.inclusion_proof(leaves, i) == naive_path(i, entries), (i, n)
        for m in range(1, n + 1):
            assert merkle.consistency_proof(leaves, m) == naive_proof(m, entries), (m, n)


# --- 3. Hypothesis properties. --------------------------------------------------------

ENTRY = st.binary(max_size=12)


def trees(*, unique: bool, min_size: int = 1) -> st.SearchStrategy[list[bytes]]:
    """Lists of min_size..200 leaf hashes. ``unique`` rules out repeated entries, which the
    wrong-index check needs: with two equal leaves a proof may honestly fit both."""
    # Draw the size first: plain st.lists stays small (mean ~6), this spreads over 1..200.
    entries = st.integers(min_size, 200).flatmap(lambda n: st.lists(ENTRY, min_size=n, max_size=n, unique=unique))
    return entries.map(lambda es: [merkle.leaf_hash(e) for e in es])


def _path_len(index: int, size: int) -> int:
    """|PATH(index, D[size])|, from the naive implementation (contents irrelevant)."""
    return len(naive_path(index, [b""] * size))


def _proof_len(old_size: int, new_size: int) -> int:
    """|PROOF(old_size, D[new_size])|, from the naive implementation."""
    return len(naive_proof(old_size, [b""] * new_size))


def _sample(data: st.DataObject, lo: int, hi: int) -> list[int]:
    """Every value in [lo, hi] for small ranges, else both ends plus up to 30 drawn."""
    if hi - lo < 40:
        return list(range(lo, hi + 1))
    drawn = data.draw(st.sets(st.integers(lo, hi), max_size=30), label="sampled")
    return sorted({lo, hi, *drawn})


@PROPERTY
@given(leaves=trees(unique=False), data=st.data())
def test_inclusion_proofs_verify(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    root = merkle.root(leaves)
    for i in _sample(data, 0, n - 1):
        proof = merkle.inclusion_proof(leaves, i)
        assert merkle.verify_inclusion(leaves[i], i, n, proof, root), i


@PROPERTY
@given(data=st.data())
def test_altered_inclusion_proof_fails(data: st.DataObject) -> None:
    leaves = data.draw(trees(unique=True), label="leaves")
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    leaf, root = leaves[i], merkle.root(leaves)
    proof = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaf, i, n, proof, root)

    def accepts(*, index: int = i, size: int = n, p: list[bytes] = proof, lf: bytes = leaf, rt: bytes = root) -> bool:
        return merkle.verify_inclusion(lf, index, size, p, rt)

    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra hash")
    assert not accepts(p=[*proof, extra])
    assert not accepts(p=[extra, *proof])
    assert not accepts(p=[*proof, root])
    assert not accepts(p=[leaf, *proof])
    if proof:
        pos = data.draw(st.integers(0, len(proof) - 1), label="proof position")
        bit = data.draw(st.integers(0, 255), label="bit")
        assert not accepts(p=[*proof[:pos], _flip(proof[pos], bit), *proof[pos + 1 :]])
        assert not accepts(p=proof[:pos] + proof[pos + 1 :])
    else:
        assert not accepts(p=[extra])
    bit = data.draw(st.integers(0, 255), label="leaf/root bit")
    assert not accepts(lf=_flip(leaf, bit))
    assert not accepts(rt=_flip(root, bit))

    # Wrong index: the leaves are distinct, so leaf i sits nowhere else in the tree.
    if n > 1:
        j = data.draw(st.integers(0, n - 2), label="wrong index")
        j += j >= i
        assert not accepts(index=j)
    assert not accepts(index=n)
    assert not accepts(index=-1)
    assert not accepts(index=i + (1 << 64))

    # Wrong size. An inclusion proof does not commit to the tree size: sizes whose
    # PATH to leaf i has the same shape (the same bit_length(i ^ (size - 1))) hash
    # the proof identically, e.g. leaf 0 of 3 and of 4, and no verifier can tell them
    # apart. For i < size the shape is the same exactly when the proof length is,
    # so any size needing a different proof length must be rejected.
    size = data.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n), label="wrong size")
    assert accepts(size=size) == (i < size and _path_len(i, size) == len(proof))


def test_inclusion_proof_does_not_bind_tree_size() -> None:
    """The documented RFC property behind the wrong-size rule above."""
    leaves = RFC_LEAVES[:3]
    proof = merkle.inclusion_proof(leaves, 0)
    root3 = merkle.root(leaves)
    assert merkle.verify_inclusion(leaves[0], 0, 4, proof, root3)
    assert not merkle.verify_inclusion(leaves[0], 0, 5, proof, root3)
    assert not merkle.verify_inclusion(leaves[0], 0, 2, proof, root3)


@PROPERTY
@given(leaves=trees(unique=False), data=st.data())
def test_consistency_proofs_verify(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    new_root = merkle.root(leaves)
    for m in _sample(data, 1, n):
        proof = merkle.consistency_proof(leaves, m)
        assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), new_root, proof), m


@PROPERTY
@given(data=st.data())
def test_altered_consistency_proof_fails(data: st.DataObject) -> None:
    leaves = data.draw(trees(unique=True, min_size=2), label="leaves")
    n = len(leaves)
    m = data.draw(st.integers(1, n - 1), label="old size")
    old, new = merkle.root(leaves[:m]), merkle.root(leaves)
    proof = merkle.consistency_proof(leaves, m)
    assert proof
    assert merkle.verify_consistency(m, n, old, new, proof)

    def accepts(*, m1: int = m, n2: int = n, r1: bytes = old, r2: bytes = new, p: list[bytes] = proof) -> bool:
        return merkle.verify_consistency(m1, n2, r1, r2, p)

    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra hash")
    pos = data.draw(st.integers(0, len(proof) - 1), label="proof position")
    bit = data.draw(st.integers(0, 255), label="bit")
    assert not accepts(p=[*proof[:pos], _flip(proof[pos], bit), *proof[pos + 1 :]])
    assert not accepts(p=proof[:pos] + proof[pos + 1 :])
    assert not accepts(p=[*proof, extra])
    assert not accepts(p=[extra, *proof])
    assert not accepts(p=[old, *proof])
    assert not accepts(p=[*proof, old])
    assert not accepts(p=[*proof, new])
    assert not accepts(p=[])
    assert not accepts(r1=_flip(old, bit))
    assert not accepts(r2=_flip(new, bit))
    assert not accepts(r1=new, r2=old)
    assert not accepts(m1=n)  # equal sizes demand an empty proof
    assert not accepts(m1=0)
    assert not accepts(n2=m)

    # Wrong sizes. As with inclusion, a proof does not always commit to the sizes
    # (same-shaped size pairs hash it identically), but the number of hashes the
    # verifier consumes depends on the sizes alone: a size pair whose PROOF has a
    # different length must be rejected.
    m1 = data.draw(st.integers(0, n + 1).filter(lambda s: s != m), label="wrong old size")
    if not 0 < m1 < n or _proof_len(m1, n) != len(proof):
        assert not accepts(m1=m1)
    n2 = data.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n), label="wrong new size")
    if not m < n2 or _proof_len(m, n2) != len(proof):
        assert not accepts(n2=n2)


@PROPERTY
@given(leaves=trees(unique=False, min_size=0), data=st.data())
def test_accumulator_tracks_prefix_roots(leaves: list[bytes], data: st.DataObject) -> None:
    checked = set(_sample(data, 0, len(leaves)))
    acc = merkle.Accumulator()
    assert acc.root() == merkle.EMPTY_ROOT
    for k, leaf in enumerate(leaves, start=1):
        acc.append(leaf)
        assert acc.size == k
        assert len(acc.nodes) == bin(k).count("1")  # O(log n) memory
        if k in checked:
            assert acc.root() == merkle.root(leaves[:k]), k


# --- 4. CompactRange. -----------------------------------------------------------------


def _build(leaves: list[bytes], begin: int, end: int) -> merkle.CompactRange:
    cr = merkle.CompactRange(begin)
    for leaf in leaves[begin:end]:
        cr.append(leaf)
    assert (cr.begin, cr.end) == (begin, end)
    return cr


@st.composite
def split_trees(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Leaf hashes (0..200 of them) and the boundaries of adjacent pieces, 0 to n."""
    n = draw(st.integers(0, 200))
    leaves = [merkle.leaf_hash(e) for e in draw(st.lists(ENTRY, min_size=n, max_size=n))]
    cuts = draw(st.lists(st.integers(0, len(leaves)), max_size=10))
    return leaves, [0, *sorted(cuts), len(leaves)]


@PROPERTY
@given(split=split_trees())
def test_compact_ranges_merge_into_accumulator(split: tuple[list[bytes], list[int]]) -> None:
    leaves, bounds = split
    acc = merkle.Accumulator()
    for begin, end in itertools.pairwise(bounds):
        acc.extend(_build(leaves, begin, end))
        assert acc.size == end
    assert acc.root() == merkle.root(leaves)
    assert acc.nodes == _build(leaves, 0, len(leaves)).nodes
    # and the other way round: a CompactRange from 0 takes an Accumulator's subtrees
    back = merkle.CompactRange(0)
    back.extend(acc)
    assert (back.end, back.root()) == (len(leaves), merkle.root(leaves))


@PROPERTY
@given(split=split_trees(), data=st.data())
def test_compact_ranges_merge_in_any_order(split: tuple[list[bytes], list[int]], data: st.DataObject) -> None:
    """Merging adjacent pieces pairwise, in any order, including pieces that do not
    start at 0, gives the same canonical range as appending leaf by leaf."""
    leaves, bounds = split
    pieces = [_build(leaves, b, e) for b, e in itertools.pairwise(bounds)]
    while len(pieces) > 1:
        k = data.draw(st.integers(0, len(pieces) - 2), label="merge at")
        left, right = pieces[k], pieces.pop(k + 1)
        left.extend(right)
        assert left.nodes == _build(leaves, left.begin, left.end).nodes
    (whole,) = pieces
    assert (whole.begin, whole.end) == (0, len(leaves))
    assert whole.root() == merkle.root(leaves)


@PROPERTY
@given(
    entries=st.lists(ENTRY, max_size=40),
    begin=st.integers(0, 100),
    gap=st.integers(-40, 40).filter(bool),
)
def test_extend_non_adjacent_range_raises(entries: list[bytes], begin: int, gap: int) -> None:
    leaves = [merkle.leaf_hash(e) for e in entries]
    cr = merkle.CompactRange(begin)
    for leaf in leaves:
        cr.append(leaf)
    other = merkle.CompactRange(max(0, cr.end + gap))
    if other.begin == cr.end:  # gap clamped onto the boundary
        other = merkle.CompactRange(cr.end + 1)
    other.append(leaves[0] if leaves else merkle.EMPTY_ROOT)
    before = (cr.begin, cr.end, list(cr.nodes))
    with pytest.raises(ValueError):
        cr.extend(other)
    assert (cr.begin, cr.end, cr.nodes) == before  # a refused merge changes nothing
    if begin == 0:
        acc = merkle.Accumulator()
        acc.extend(cr)
        with pytest.raises(ValueError):
            acc.extend(other)


@pytest.mark.parametrize("begin", [1, 2, 3, 8, 1000])
@pytest.mark.parametrize("count", [0, 1, 5])
def test_root_of_range_not_starting_at_zero_raises(begin: int, count: int) -> None:
    cr = merkle.CompactRange(begin)
    for leaf in RFC_LEAVES[:count]:
        cr.append(leaf)
    with pytest.raises(ValueError):
        cr.root()


@pytest.mark.parametrize("make", [merkle.CompactRange, merkle.Accumulator], ids=["CompactRange", "Accumulator"])
def test_copy_is_independent(make: type) -> None:
    cr = make()
    for leaf in RFC_LEAVES[:5]:
        cr.append(leaf)
    clone = cr.copy()
    cr.append(RFC_LEAVES[5])
    assert (clone.begin, clone.end) == (0, 5)
    assert clone.root() == bytes.fromhex(RFC_ROOTS[5])
    assert cr.root() == bytes.fromhex(RFC_ROOTS[6])


# --- Argument checks of the proof generators. -----------------------------------------


@pytest.mark.parametrize(("n", "index"), [(0, 0), (1, 1), (1, -1), (8, 8), (8, -1), (5, 100)])
def test_inclusion_proof_index_out_of_range(n: int, index: int) -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(RFC_LEAVES[:n], index)


@pytest.mark.parametrize(("n", "old_size"), [(0, 0), (1, 0), (8, 0), (8, -1), (8, 9), (1, 2)])
def test_consistency_proof_size_out_of_range(n: int, old_size: int) -> None:
    with pytest.raises(ValueError):
        merkle.consistency_proof(RFC_LEAVES[:n], old_size)
