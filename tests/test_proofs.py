"""Tests for ledger.proofs: proofs from session files and C2SP tlog-proof@v1.

1. Small sessions made with SessionBuilder, checkpoints at every size 1..22: an
   inclusion proof for every (seq, checkpoint size) pair and a consistency proof for
   every pair of sizes, compared with ledger.merkle's reference functions over leaf
   hashes computed here independently (own regex, own SHA-256), and verified.
2. A 100,000-event session: random pairs, verified, a few compared with merkle's.
3. tlog-proof: the exact layout, round trip with Ed25519-signed checkpoint notes,
   and rejection of altered hashes, index, entry, note, keys and origin.
4. Files that cannot give a proof: missing checkpoint, seq not covered, tampered
   lines, torn tails, non-ledger input.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import time
from pathlib import Path

import msgspec
import pytest

from ledger import format as fmt
from ledger import merkle, notes, proofs
from ledger.errors import EvidenceError, InputError, UsageError
from ledger.notes import NoteError, Signer, sign_note
from ledger.proofs import ProofError, SessionTree
from ledger.session import SessionBuilder

KEY = bytes(range(32))
NS = "edge-1"
SID = "20261123T200000.000000Z-t01"
ORIGIN = f"ledger/{NS}/{SID}"
TS = "2026-11-23T20:00:00.000000Z"
LOG = Signer("example.com/ledger-edge-1", bytes([5]) * 32)
WITNESS = Signer("witness.example", bytes([6]) * 32)
OTHER = Signer("example.com/ledger-edge-1", bytes([7]) * 32)  # same name, other key


def build(path: Path, layout: str, sid: str = SID) -> list[bytes]:
    """Write a session: line 0, then 'e' event, 'c' checkpoint, 's' seal per letter."""
    b = SessionBuilder(NS, sid, [KEY])
    lines = [b.opened_line(TS)]
    for i, op in enumerate(layout):
        if op == "e":
            lines.append(b.line("app.event", b'{"i":%d,"s":"caf\\u00e9 \xe2\x82\xac"}' % i, TS))
        elif op == "c":
            lines.append(b.checkpoint_line(TS))
        else:
            lines.append(b.seal_line(TS, "closed", {}))
    path.write_bytes(b"".join(lines))
    return lines


# --- independent reference: events, leaves and roots from the SPEC text ---------------------

_CHAIN = re.compile(rb',"chain":"[0-9a-f]{64}"\}\n\Z')


def ref_leaf(line: bytes) -> bytes:
    event = _CHAIN.sub(b"}", line)
    assert event != line
    return hashlib.sha256(b"\x00" + event).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def checkpoint_sizes(lines: list[bytes]) -> list[int]:
    sizes = []
    for seq, line in enumerate(lines):
        if b'"kind":"ledger.checkpoint"' in line or b'"kind":"session.sealed"' in line:
            sizes.append(seq)
    return sizes


def signed_note(p: proofs.InclusionProof, signers=(LOG,)) -> bytes:
    return sign_note(p.checkpoint_text(), list(signers))


# --- 1. small trees, every pair ---------------------------------------------------------------

# Checkpoint after every line (odd sizes), after every event following one (even sizes).
LAYOUTS = {"odd": "c" + "ec" * 10 + "s", "even": "e" + "ce" * 10 + "cs"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = {}
    for name, layout in LAYOUTS.items():
        path = tmp_path_factory.mktemp(name) / f"{SID}.ndjson"
        lines = build(path, layout)
        out[name] = (path, lines, [ref_leaf(x) for x in lines])
    return out


def test_small_sessions_cover_every_size(small):
    sizes = set()
    for _, lines, _ in small.values():
        sizes.update(checkpoint_sizes(lines))
    assert set(range(1, 23)) <= sizes


@pytest.mark.parametrize("name", LAYOUTS)
def test_inclusion_every_seq_and_size(small, name):
    path, lines, leaves = small[name]
    tree = SessionTree.load(path)
    assert tree.leaf_hashes() == leaves == proofs.tree_leaves(path)
    assert tree.origin == ORIGIN
    count = 0
    for size in checkpoint_sizes(lines):
        root = ref_mth(leaves[:size])
        for seq in range(size):
            p = tree.inclusion(seq, size)
            assert (p.index, p.size, p.root, p.origin) == (seq, size, root, ORIGIN)
            assert p.entry == lines[seq] and p.leaf == leaves[seq]
            assert p.path == merkle.inclusion_proof(leaves[:size], seq)
            assert merkle.verify_inclusion(p.leaf, seq, size, p.path, root)
            assert p.checkpoint_line == size + 1
            assert all(s.alg == "hmac-sha256" for s in p.sigs) and p.sigs
            count += 1
    assert count > 100


@pytest.mark.parametrize("name", LAYOUTS)
def test_consistency_every_pair(small, name):
    path, lines, leaves = small[name]
    tree = SessionTree.load(path)
    sizes = checkpoint_sizes(lines)
    for new in sizes:
        for old in range(1, new + 1):  # every old size, checkpointed or not
            c = tree.consistency(old, new)
            assert (c.old_size, c.new_size, c.origin) == (old, new, ORIGIN)
            assert c.old_root == ref_mth(leaves[:old]) and c.new_root == ref_mth(leaves[:new])
            assert c.path == merkle.consistency_proof(leaves[:new], old)
            assert merkle.verify_consistency(old, new, c.old_root, c.new_root, c.path)
    for old in sizes:
        for new in sizes:
            if old <= new:
                c = proofs.consistency(path, old, new)
                assert merkle.verify_consistency(old, new, ref_mth(leaves[:old]), ref_mth(leaves[:new]), c.path)


def test_altered_inclusion_proofs_fail(small):
    path, lines, leaves = small["odd"]
    tree = SessionTree.load(path)
    size = checkpoint_sizes(lines)[-1]
    root = ref_mth(leaves[:size])
    for seq in range(size):
        p = tree.inclusion(seq, size)
        for i in range(len(p.path)):
            bad = list(p.path)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            assert not merkle.verify_inclusion(p.leaf, seq, size, bad, root)
        assert not merkle.verify_inclusion(p.leaf, seq, size, p.path[:-1], root)
        assert not merkle.verify_inclusion(p.leaf, seq, size, p.path + [root], root)
        for other in (seq - 1, seq + 1):
            if 0 <= other < size and leaves[other] != leaves[seq]:
                assert not merkle.verify_inclusion(p.leaf, other, size, p.path, root)


def test_default_checkpoint_is_the_last(small):
    path, lines, leaves = small["even"]
    last = checkpoint_sizes(lines)[-1]
    cp = proofs.find_checkpoint(path)
    assert cp == proofs.find_checkpoint(path, last)
    origin, size, root_hex, sigs, line, extension = cp
    assert (origin, size, root_hex, line) == (ORIGIN, last, ref_mth(leaves[:last]).hex(), last + 1)
    # The last commitment is the seal: its signatures are over the seal text (SPEC 4.3).
    assert extension == b"ledger-seal closed 0\n"
    assert cp.text() == fmt.seal_text(ORIGIN, last, bytes.fromhex(root_hex), "closed", {})
    assert fmt.hmac_matches(KEY, cp.text(), sigs[0].sig)
    p = proofs.inclusion(path, 0)
    assert p.size == last
    c = proofs.consistency(path, 1)
    assert c.new_size == last


def test_as_dict_is_json(small):
    path, _, _ = small["odd"]
    p = proofs.inclusion(path, 2, 5)
    d = msgspec.json.decode(msgspec.json.encode(p.as_dict()))
    assert d["type"] == "inclusion" and d["index"] == 2 and d["size"] == 5
    assert base64.b64decode(d["entry"]) == p.entry
    assert [bytes.fromhex(h) for h in d["proof"]] == p.path
    c = proofs.consistency(path, 2, 5)
    d = msgspec.json.decode(msgspec.json.encode(c.as_dict()))
    assert d["type"] == "consistency" and d["old_root"] == c.old_root.hex()


# --- 2. a 100,000-event session -----------------------------------------------------------------

BIG = 100_000


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / f"{SID}.ndjson"
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(TS)]
    while len(lines) < BIG - 1:
        if len(lines) % 997 == 0:
            lines.append(b.checkpoint_line(TS))
        else:
            lines.append(b.line("app.event", b'{"n":%d}' % len(lines), TS))
    lines.append(b.seal_line(TS, "closed", {}))
    path.write_bytes(b"".join(lines))
    leaves = [ref_leaf(x) for x in lines]
    sizes = checkpoint_sizes(lines)
    acc, roots = merkle.Accumulator(), {}
    for i, leaf in enumerate(leaves):
        if i in sizes:
            roots[i] = acc.root()
        acc.append(leaf)
    return path, lines, leaves, sizes, roots


def test_big_session_random_pairs(big):
    path, lines, leaves, sizes, roots = big
    started = time.perf_counter()
    tree = SessionTree.load(path)
    assert tree.size == BIG and len(sizes) > 90 and sizes[-1] == BIG - 1
    rng = random.Random(1795464000)
    pairs = []
    for _ in range(300):
        size = rng.choice(sizes)
        seq = rng.randrange(size)
        old = rng.choice([rng.randrange(1, size + 1), rng.choice([s for s in sizes if s <= size])])
        pairs.append((seq, old, size))
    # Reference roots of every old size needed, in one pass.
    wanted, acc, old_roots = {old for _, old, _ in pairs}, merkle.Accumulator(), {}
    for leaf in leaves:
        acc.append(leaf)
        if acc.size in wanted:
            old_roots[acc.size] = acc.root()
    for seq, old, size in pairs:
        p = tree.inclusion(seq, size)
        assert p.entry == lines[seq] and p.root == roots[size]
        assert merkle.verify_inclusion(leaves[seq], seq, size, p.path, roots[size])
        c = tree.consistency(old, size)
        assert c.old_root == old_roots[old]
        assert merkle.verify_consistency(old, size, old_roots[old], roots[size], c.path)
    # A few against merkle's O(n) reference functions.
    for seq, size, old in [(0, BIG - 1, 1), (BIG - 2, BIG - 1, BIG - 2), (65535, 65814, 65536), (31337, 99700, 50000)]:
        size = max(s for s in sizes if s <= size)
        assert tree.inclusion_path(seq, size) == merkle.inclusion_proof(leaves[:size], seq)
        assert tree.consistency_path(old, size) == merkle.consistency_proof(leaves[:size], old)
    assert time.perf_counter() - started < 15


def test_big_session_tlog_proof(big):
    path, lines, _, sizes, roots = big
    p = proofs.inclusion(path, 54321)
    assert p.size == sizes[-1] and p.root == roots[sizes[-1]]
    r = proofs.verify_tlog_proof(proofs.encode_tlog_proof(p, signed_note(p)), [LOG.verifier()], origin=ORIGIN)
    assert (r.index, r.size, r.entry) == (54321, BIG - 1, lines[54321])


# --- 3. tlog-proof@v1 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tlog(small):
    path, lines, _ = small["odd"]
    p = proofs.inclusion(path, 6, 13)
    note = signed_note(p, (LOG, WITNESS))
    return p, note, proofs.encode_tlog_proof(p, note), lines


def test_tlog_proof_layout(tlog):
    p, note, data, lines = tlog
    head, rest = data.split(b"\n\n", 1)
    head_lines = head.split(b"\n")
    assert head_lines[0] == b"c2sp.org/tlog-proof@v1"
    assert head_lines[1] == b"extra " + base64.b64encode(lines[6])
    assert head_lines[2] == b"index 6"
    assert head_lines[3:] == [base64.b64encode(h) for h in p.path] and len(p.path) == 4
    assert rest == note
    assert note.startswith(f"{ORIGIN}\n13\n".encode())


def test_tlog_proof_round_trip(tlog):
    p, note, data, lines = tlog
    parsed = proofs.parse_tlog_proof(data)
    assert (parsed.index, parsed.path, parsed.note, parsed.extra) == (6, p.path, note, lines[6])
    r = proofs.verify_tlog_proof(data, [LOG.verifier()], origin=ORIGIN)
    assert (r.origin, r.size, r.root, r.index, r.entry, r.leaf) == (ORIGIN, 13, p.root, 6, lines[6], p.leaf)
    assert r.event == fmt.event_of_line(lines[6])
    assert r.verified == [LOG.name] and r.unknown == [WITNESS.name]
    both = proofs.verify_tlog_proof(data, [WITNESS.verifier(), LOG.verifier()])
    assert both.verified == [LOG.name, WITNESS.name] and both.unknown == []
    assert msgspec.json.decode(msgspec.json.encode(r.as_dict()))["ok"] is True


def test_tlog_proof_every_seq_of_a_sealed_session(small):
    path, lines, _ = small["even"]
    tree = SessionTree.load(path)
    seal = tree.checkpoints[-1]
    assert lines[seal.line - 1].find(b'"kind":"session.sealed"') > 0
    for seq in range(seal.size):
        p = tree.inclusion(seq, seal.size)
        r = proofs.verify_tlog_proof(proofs.encode_tlog_proof(p, signed_note(p)), [LOG.verifier()], ORIGIN)
        assert r.index == seq and r.entry == lines[seq]


def test_tlog_proof_size_one_has_no_hashes(small):
    path, _, _ = small["odd"]
    p = proofs.inclusion(path, 0, 1)
    data = proofs.encode_tlog_proof(p, signed_note(p))
    assert data.split(b"\n\n")[0].split(b"\n")[2:] == [b"index 0"]
    assert proofs.verify_tlog_proof(data, [LOG.verifier()]).size == 1


def test_tlog_proof_wrong_keys(tlog):
    _, _, data, _ = tlog
    with pytest.raises(NoteError) as info:
        proofs.verify_tlog_proof(data, [OTHER.verifier()])
    assert info.value.reason == "unverified" and isinstance(info.value, EvidenceError)
    with pytest.raises(NoteError):
        proofs.verify_tlog_proof(data, [])


def test_tlog_proof_wrong_origin(tlog):
    _, _, data, _ = tlog
    with pytest.raises(ProofError) as info:
        proofs.verify_tlog_proof(data, [LOG.verifier()], origin=f"ledger/{NS}/20261123T200000.000000Z-t02")
    assert info.value.reason == "origin_mismatch"


def _replace_line(data: bytes, i: int, new: bytes) -> bytes:
    head, note = data.split(b"\n\n", 1)
    lines = head.split(b"\n")
    lines[i] = new
    return b"\n".join(lines) + b"\n\n" + note


def test_tlog_proof_altered_hashes(tlog):
    p, _, data, _ = tlog
    for i in range(len(p.path)):
        h = bytearray(p.path[i])
        h[31] ^= 0x80
        with pytest.raises(ProofError) as info:
            proofs.verify_tlog_proof(_replace_line(data, 3 + i, base64.b64encode(bytes(h))), [LOG.verifier()])
        assert info.value.reason == "root_mismatch"
    head, note = data.split(b"\n\n", 1)
    for bad_head in (head.rsplit(b"\n", 1)[0], head + b"\n" + base64.b64encode(bytes(32))):
        with pytest.raises(ProofError) as info:
            proofs.verify_tlog_proof(bad_head + b"\n\n" + note, [LOG.verifier()])
        assert info.value.reason == "bad_proof"


def test_tlog_proof_wrong_index(tlog):
    p, _, data, lines = tlog
    for index in (5, 7, 12, 13, 14):
        with pytest.raises(ProofError) as info:
            proofs.verify_tlog_proof(_replace_line(data, 2, b"index %d" % index), [LOG.verifier()])
        assert info.value.reason == "index_mismatch"
    # Another entry, honestly labelled, with the path of entry 6.
    swapped = _replace_line(_replace_line(data, 1, b"extra " + base64.b64encode(lines[7])), 2, b"index 7")
    with pytest.raises(ProofError) as info:
        proofs.verify_tlog_proof(swapped, [LOG.verifier()])
    assert info.value.reason == "root_mismatch"


def test_tlog_proof_altered_entry(tlog):
    _, _, data, lines = tlog
    entry = lines[6]
    cases = [
        (entry.replace(b'"i":', b'"j":'), "root_mismatch"),  # data edited
        (entry.replace(b'"kind":"app.event"', b'"kind":"app.evenT"'), "root_mismatch"),
        (entry.replace(b'{"v":1,', b'{"v":2,'), "bad_entry"),  # not a ledger v1 header
        (entry[:-1], "bad_entry"),  # no LF
        (entry + entry, "bad_entry"),  # two lines
        (entry[:-2] + b"\n", "bad_entry"),  # no closing brace
        (b"x", "bad_entry"),
    ]
    for e, reason in cases:
        assert e != entry
        with pytest.raises(ProofError) as info:
            proofs.verify_tlog_proof(_replace_line(data, 1, b"extra " + base64.b64encode(e)), [LOG.verifier()])
        assert info.value.reason == reason, e
    head, note = data.split(b"\n\n", 1)
    no_extra = b"\n".join(x for x in head.split(b"\n") if not x.startswith(b"extra ")) + b"\n\n" + note
    with pytest.raises(ProofError) as info:
        proofs.verify_tlog_proof(no_extra, [LOG.verifier()])
    assert info.value.reason == "bad_entry"


def test_tlog_proof_chain_member_is_not_authenticated_but_must_be_shaped(tlog):
    """The leaf covers E_i, not the chain value: a changed chain still proves E_i."""
    _, _, data, lines = tlog
    entry = lines[6]
    rechained = entry[:-67] + b"0" * 64 + b'"}\n'
    r = proofs.verify_tlog_proof(_replace_line(data, 1, b"extra " + base64.b64encode(rechained)), [LOG.verifier()])
    assert r.event == fmt.event_of_line(entry)
    for broken in (entry[:-67] + b"Z" * 64 + b'"}\n', entry[:-3] + b"\n"):
        with pytest.raises(ProofError) as info:
            proofs.verify_tlog_proof(_replace_line(data, 1, b"extra " + base64.b64encode(broken)), [LOG.verifier()])
        assert info.value.reason == "bad_entry"


def test_tlog_proof_note_for_another_tree(tlog, small):
    p, _, data, _ = tlog
    head = data.split(b"\n\n", 1)[0]
    # A genuine signature by the log over a different root: the path does not reach it.
    other_root = ref_mth(small["odd"][2][:12])
    note = sign_note(fmt.checkpoint_text(ORIGIN, 13, other_root), [LOG])
    with pytest.raises(ProofError) as info:
        proofs.verify_tlog_proof(head + b"\n\n" + note, [LOG.verifier()])
    assert info.value.reason == "root_mismatch"
    # The same signature with the size edited: the signature fails.
    good = signed_note(p)
    with pytest.raises(NoteError) as ninfo:
        proofs.verify_tlog_proof(head + b"\n\n" + good.replace(b"\n13\n", b"\n14\n"), [LOG.verifier()])
    assert ninfo.value.reason == "bad_signature"
    # A signed note whose text is not a checkpoint.
    with pytest.raises(ProofError) as info:
        proofs.verify_tlog_proof(head + b"\n\n" + sign_note(b"hello\n", [LOG]), [LOG.verifier()])
    assert info.value.reason == "malformed"


def test_encode_refuses_a_note_of_another_checkpoint(tlog):
    p, _, _, _ = tlog
    with pytest.raises(ValueError):
        proofs.encode_tlog_proof(p, sign_note(fmt.checkpoint_text(ORIGIN, 12, p.root), [LOG]))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.replace(b"c2sp.org/tlog-proof@v1", b"c2sp.org/tlog-proof@v2"),
        lambda d: d.replace(b"index 6", b"index 06"),
        lambda d: d.replace(b"index 6", b"index -6"),
        lambda d: d.replace(b"index 6", b"index"),
        lambda d: d.replace(b"index 6", b"idx 6"),
        lambda d: d.replace(b"extra ", b"extra  "),
        lambda d: d.replace(b"extra ", b"extra !"),
        lambda d: _replace_line(d, 3, base64.b64encode(bytes(31))),
        lambda d: _replace_line(d, 3, base64.b64encode(bytes(33))),
        lambda d: _replace_line(d, 3, base64.b64encode(bytes(32))[:-1]),
        lambda d: d.split(b"\n\n", 1)[0] + b"\n\n",
        lambda d: d.replace(b"\n\n", b"\n"),
        lambda d: _replace_line(d, 3, b"\n".join([base64.b64encode(bytes(32))] * 65)),
    ],
)
def test_tlog_proof_malformed(tlog, mutate):
    _, _, data, _ = tlog
    bad = mutate(data)
    assert bad != data
    with pytest.raises(EvidenceError) as info:
        proofs.verify_tlog_proof(bad, [LOG.verifier()])
    assert getattr(info.value, "reason", None) == "malformed"


def test_checkpoint_text_parsing():
    root = bytes(range(32))
    text = fmt.checkpoint_text("example.com/log", 5, root)
    assert proofs.parse_checkpoint_text(text) == ("example.com/log", 5, root)
    assert proofs.parse_checkpoint_text(text + b"extension line\n") == ("example.com/log", 5, root)
    assert proofs.parse_checkpoint_text(fmt.checkpoint_text("o", 0, merkle.EMPTY_ROOT))[1] == 0
    for bad in (
        text[:-1],
        b"\n5\n" + base64.b64encode(root) + b"\n",
        b"o\n05\n" + base64.b64encode(root) + b"\n",
        b"o\n5\n" + base64.b64encode(root[:31]) + b"\n",
        b"o\n5\n",
        text + b"\n",
    ):
        with pytest.raises(ProofError):
            proofs.parse_checkpoint_text(bad)


# --- 4. files that cannot give a proof --------------------------------------------------------


def test_no_such_checkpoint_or_seq(small, tmp_path):
    path, _, _ = small["odd"]
    with pytest.raises(UsageError, match="no checkpoint of size 2"):
        proofs.inclusion(path, 0, 2)
    with pytest.raises(UsageError, match="not covered"):
        proofs.inclusion(path, 5, 5)
    with pytest.raises(UsageError):
        proofs.inclusion(path, -1, 5)
    with pytest.raises(UsageError):
        proofs.consistency(path, 0, 5)
    with pytest.raises(UsageError):
        proofs.consistency(path, 6, 5)
    bare = tmp_path / "bare.ndjson"
    build(bare, "eee")
    with pytest.raises(UsageError, match="no checkpoint"):
        proofs.inclusion(bare, 0)


def test_torn_tail_is_ignored(tmp_path):
    path = tmp_path / "live.ndjson"
    lines = build(path, "ececee")
    with open(path, "ab") as f:
        f.write(lines[-1][:40])
    tree = SessionTree.load(path)
    assert tree.size == len(lines)
    assert proofs.tree_leaves(path) == [ref_leaf(x) for x in lines]
    assert proofs.inclusion(path, 3).size == 4


def test_tampered_line_blocks_later_checkpoints(tmp_path):
    path = tmp_path / "t.ndjson"
    lines = build(path, "ecececec")  # checkpoints at sizes 2, 4, 6, 8
    data = bytearray(path.read_bytes())
    start = sum(len(x) for x in lines[:3])
    i = data.index(b'"i":', start)
    data[i + 1] = ord("j")  # edit line 3 (seq 3) without re-hashing
    path.write_bytes(bytes(data))
    assert proofs.inclusion(path, 1, 2).size == 2  # before the edit: still provable
    for size in (4, 6, 8):
        with pytest.raises(EvidenceError, match="root does not match") as info:
            proofs.inclusion(path, 0, size)
        assert info.value.line == size + 1 and info.value.path == str(path)
    with pytest.raises(EvidenceError):
        proofs.consistency(path, 2, 8)


def test_checkpoint_at_the_wrong_seq_is_refused(tmp_path):
    path = tmp_path / "w.ndjson"
    b = SessionBuilder(NS, SID, [KEY])
    lines = [b.opened_line(TS), b.line("app.event", b"{}", TS)]
    data = fmt.build_checkpoint(ORIGIN, 1, b.tree.root(), b.chain, [KEY])  # says size 1 at seq 2
    lines.append(b.line(fmt.KIND_CHECKPOINT, msgspec.json.encode(data), TS))
    path.write_bytes(b"".join(lines))
    with pytest.raises(EvidenceError, match="size 1 at seq 2"):
        proofs.inclusion(path, 0, 1)


def test_file_changed_between_scan_and_read(tmp_path):
    path = tmp_path / "c.ndjson"
    lines = build(path, "ecec")
    tree = SessionTree.load(path)
    data = path.read_bytes().replace(b'"i":0', b'"i":9')
    path.write_bytes(data)
    with pytest.raises(EvidenceError, match="changed"):
        tree.inclusion(1, 2)
    assert len(lines) == 5


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", InputError),
        (b"no newline at all", InputError),
        (b'{"not":"ledger"}\n', EvidenceError),
    ],
)
def test_not_a_session(tmp_path, content, error):
    path = tmp_path / "x.ndjson"
    path.write_bytes(content)
    with pytest.raises(error):
        SessionTree.load(path)


def test_overlong_line_refused(tmp_path, small, monkeypatch):
    _, lines, _ = small["odd"]
    path = tmp_path / "x.ndjson"
    path.write_bytes(lines[0] + b"x" * 5000)
    monkeypatch.setattr(fmt, "MAX_LINE_BYTES", 4096)
    monkeypatch.setattr(proofs.tree, "_BLOCK", 1024)
    with pytest.raises(EvidenceError, match="16 MiB") as info:
        SessionTree.load(path)
    assert info.value.line == 2


def test_line_zero_must_be_opened(tmp_path, small):
    _, lines, _ = small["odd"]
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"".join(lines[1:]))
    with pytest.raises(EvidenceError, match="session.opened"):
        SessionTree.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError):
        proofs.inclusion(tmp_path / "missing.ndjson", 0)


def test_checkpoint_note_from_line_sigs(small):
    """A checkpoint line carrying an ed25519 sigs entry gives the note for a tlog-proof."""
    path, _, _ = small["odd"]
    p = proofs.inclusion(path, 3, 5)
    text = p.checkpoint_text()
    sigs = [msgspec.structs.asdict(s) for s in p.sigs] + [notes.checkpoint_sig(LOG, text)]
    note = notes.note_from_sigs(text, sigs)
    assert proofs.verify_tlog_proof(proofs.encode_tlog_proof(p, note), [LOG.verifier()]).index == 3
