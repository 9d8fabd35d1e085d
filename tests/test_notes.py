"""Tests for ledger.notes (C2SP signed-note@v1.0.0, Ed25519).

Layers:

1. The 15 conformance vectors (tests/vectors/signed_note_vectors.json, a copy of
   ../shared/conformance): verdict, text, verified names; keys round-trip; the notes
   with a published signer key are reproduced byte for byte (Ed25519 is deterministic).
2. A deliberately naive reference verifier written below from the C2SP text alone
   (str operations, cryptography called directly), run on every vector and on a few
   hundred mutated notes: both must reach the same verdict.
3. Round trips, the Go reference's edge rules (limits, duplicates, unknown keys,
   ambiguous keys, names), key strings and key files (mode 0600, never overwritten).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import random
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger import notes
from ledger.errors import EvidenceError, KeyFileError
from ledger.notes import NoteError, Signer, Verifier, open_note, sign_note
from ledger.proofs import parse_checkpoint_text

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
VECTORS = json.loads((VECTORS_DIR / "signed_note_vectors.json").read_text(encoding="utf-8"))["vectors"]
RFC = json.loads((VECTORS_DIR / "rfc6962.json").read_text(encoding="utf-8"))
PETER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
EM_DASH = "\u2014"


# --- A naive reference verifier, from the C2SP signed-note text only. ---------------------
# "A signed note consists of a text ending in newline, followed by a blank line, followed
# by one or more signature lines: em dash, space, key name, space, base64 signature,
# newline. MUST be valid UTF-8 and MUST NOT contain ASCII control characters other than
# newline. The text is separated from the signatures by the last empty line. Key names
# MUST be non-empty and MUST NOT contain Unicode spaces or '+'. Signatures are base64 of
# 4+n bytes: key ID big-endian, then the signature over the text. Ignore unknown keys
# (name and ID not both known); a failing known key rejects; none verified rejects."
# Verifier keys: name+hex ID+base64(0x01 || key), split on the first two '+'.


def ref_parse_vkey(vkey: str) -> tuple[str, int, bytes]:
    name, hexid, b64 = vkey.split("+", 2)
    raw = base64.b64decode(b64)
    assert raw[0] == 1 and len(raw) == 33
    expect = int.from_bytes(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4], "big")
    assert int(hexid, 16) == expect
    return name, expect, raw[1:]


def ref_open(note: bytes, vkeys: list[str]) -> list[str] | None:
    """Names of the known keys that signed ``note``, or None if it must be rejected."""
    known = {}
    for vkey in vkeys:
        name, keyid, pub = ref_parse_vkey(vkey)
        known[(name, keyid)] = pub
    try:
        s = note.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 and c != "\n" for c in s):
        return None
    if "\n\n" not in s:
        return None
    cut = s.rindex("\n\n")
    text, sig_block = s[: cut + 1], s[cut + 2 :]
    if not sig_block.endswith("\n"):
        return None
    lines = sig_block.split("\n")[:-1]
    if not lines:
        return None
    verified: list[str] = []
    done: set[tuple[str, int]] = set()
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            return None
        body = line[2:]
        if " " not in body:
            return None
        name, b64 = body.split(" ", 1)
        if not name or "+" in name or any(c.isspace() for c in name):
            return None
        try:
            blob = binascii.a2b_base64(b64.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            return None
        if len(blob) < 5:
            return None
        keyid = int.from_bytes(blob[:4], "big")
        if (name, keyid) not in known:
            continue
        if (name, keyid) in done:
            continue
        done.add((name, keyid))
        try:
            Ed25519PublicKey.from_public_bytes(known[(name, keyid)]).verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature:
            return None
        verified.append(name)
    return verified or None


def ours(note: bytes, vkeys: list[str]) -> list[str] | None:
    try:
        return open_note(note, [Verifier.from_vkey(k) for k in vkeys]).verified
    except NoteError:
        return None


# --- 1. the conformance vectors ------------------------------------------------------------


def test_all_fifteen_vectors_present():
    assert len(VECTORS) == 15
    assert len({v["id"] for v in VECTORS}) == 15


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_verdict(vec):
    note = vec["signed_note"].encode("utf-8")
    verifiers = [Verifier.from_vkey(k) for k in vec["verifier_keys"]]
    if vec["expect_valid"]:
        opened = open_note(note, verifiers)
        assert opened.text == vec["expect_text"].encode("utf-8")
        assert opened.verified == vec["expect_verified_names"]
    else:
        with pytest.raises(NoteError) as info:
            open_note(note, verifiers)
        assert isinstance(info.value, EvidenceError)
        assert info.value.reason in {"malformed", "bad_signature", "unverified"}
    # The naive reference agrees, names included.
    expected_names = vec.get("expect_verified_names") if vec["expect_valid"] else None
    assert ref_open(note, vec["verifier_keys"]) == expected_names


def test_vector_reasons_follow_go():
    """The error class the Go reference returns, vector by vector."""
    by_id = {v["id"]: v for v in VECTORS}

    def reason(vid: str) -> str:
        v = by_id[vid]
        with pytest.raises(NoteError) as info:
            open_note(v["signed_note"].encode(), [Verifier.from_vkey(k) for k in v["verifier_keys"]])
        return info.value.reason

    assert reason("x/mod no known keys -> reject") == "unverified"
    assert reason("x/mod corrupted signature (ABCD inserted at char 60) -> reject") == "bad_signature"
    assert reason("derived: tampered text (one char changed) -> reject") == "bad_signature"
    assert reason("derived: valid sig but key id in vkey list differs (unknown key) -> reject") == "unverified"
    for vid in by_id:
        if vid.startswith("x/mod malformed"):
            assert reason(vid) == "malformed", vid


@pytest.mark.parametrize("vec", VECTORS, ids=[v["id"] for v in VECTORS])
def test_vector_keys_round_trip(vec):
    for vkey in vec["verifier_keys"]:
        v = Verifier.from_vkey(vkey)
        assert v.vkey() == vkey
        assert v.key_name() == "+".join(vkey.split("+", 2)[:2])
        assert v.key_hash.hex() == vkey.split("+", 2)[1]
    if "signer_key" in vec:
        signer = notes.parse_signer_key(vec["signer_key"])
        assert signer.verifier_key() == vec["verifier_keys"][0]
        assert notes.format_signer_key(signer) == vec["signer_key"]
        assert signer.key_name() == "+".join(vec["verifier_keys"][0].split("+", 2)[:2])
        if vec["expect_valid"]:
            # Deterministic Ed25519: our signature is the published one, byte for byte.
            assert sign_note(vec["expect_text"].encode(), [signer]) == vec["signed_note"].encode()


def test_enoch_root_is_the_zero_seed_key():
    """The vectors' note: EnochRoot's seed is 32 zero bytes (Go example_test.go)."""
    vec = next(v for v in VECTORS if v["id"].startswith("x/mod PeterNeumann + EnochRoot, both"))
    enoch = Signer("EnochRoot", bytes(32))
    assert enoch.verifier_key() == vec["verifier_keys"][1]
    peter = notes.parse_signer_key(PETER_SKEY)
    assert sign_note(TEXT, [peter, enoch]) == vec["signed_note"].encode()


@pytest.mark.parametrize("vec", [v for v in VECTORS if "checkpoint" in v], ids=lambda v: v["id"])
def test_vector_checkpoints(vec):
    origin, size, root = parse_checkpoint_text(vec["expect_text"].encode())
    cp = vec["checkpoint"]
    assert (origin, size) == (cp["origin"], cp["tree_size"])
    if "root_hash_b64" in cp:
        assert base64.b64encode(root).decode() == cp["root_hash_b64"]
    else:
        assert root.hex() == cp["root_hash_hex"] == RFC["roots_hex"][str(size)]


# --- 2. the naive reference against ours on mutated notes ------------------------------------


def _mutations(note: bytes, rng: random.Random, count: int) -> list[bytes]:
    alphabet = [b"\n", b" ", b"+", b"=", b"/", b"A", b"\x01", b"\xff", b"\xe2\x80\x94", b"\t", b"\xc2\xa0"]
    out = []
    for _ in range(count):
        b = bytearray(note)
        op = rng.randrange(5)
        i = rng.randrange(len(b))
        if op == 0:
            b[i : i + 1] = rng.choice(alphabet)
        elif op == 1:
            del b[i]
        elif op == 2:
            b[i:i] = rng.choice(alphabet)
        elif op == 3:
            lines = bytes(b).split(b"\n")
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])
            b = bytearray(b"\n".join(lines))
        else:
            del b[i:]
        out.append(bytes(b))
    return out


def test_reference_agrees_on_mutations():
    rng = random.Random(20261123)
    verdicts = []
    for vec in VECTORS:
        if not vec["expect_valid"]:
            continue
        note = vec["signed_note"].encode()
        for mutated in _mutations(note, rng, 40):
            got = ours(mutated, vec["verifier_keys"])
            assert got == ref_open(mutated, vec["verifier_keys"]), mutated
            verdicts.append(got is not None)
    # Both kinds of verdict are exercised: mostly rejections, some still-valid notes.
    assert len(verdicts) >= 200 and 0 < sum(verdicts) < len(verdicts)


# --- 3. round trips and the Go reference's rules ---------------------------------------------


def test_round_trip_many_signers_in_order():
    signers = [notes.generate_signer(f"example.com/k{i}") for i in range(5)]
    text = "line one\n\nafter a blank line\n\u2014 not a signature\n".encode()
    note = sign_note(text, signers)
    opened = open_note(note, [s.verifier() for s in signers[1:4]])
    assert opened.text == text
    assert opened.verified == ["example.com/k1", "example.com/k2", "example.com/k3"]
    assert opened.unknown == ["example.com/k0", "example.com/k4"]
    assert note.count("\u2014 ".encode()) == 6  # five signatures and one in the text


def test_sign_note_layout():
    s = Signer("a.example/x", bytes(range(32)))
    note = sign_note(b"hello\n", [s])
    head, sig_line = note.split(b"\n\n")
    assert head == b"hello"
    assert sig_line.startswith(b"\xe2\x80\x94 a.example/x ") and sig_line.endswith(b"\n")
    blob = base64.b64decode(sig_line.split(b" ")[2])
    assert blob[:4] == s.key_hash and len(blob) == 68
    assert s.key_hash == hashlib.sha256(b"a.example/x\n\x01" + s.public_key).digest()[:4]
    assert Verifier.from_vkey(s.verifier_key()).verify(b"hello\n", blob[4:])


@pytest.mark.parametrize(
    "text",
    [b"no final newline", b"", b"tab\there\n", b"cr\r\n", b"\xff\xfe\n", b"nul\x00\n"],
)
def test_sign_note_rejects_bad_text(text):
    with pytest.raises(ValueError):
        sign_note(text, [Signer("x", bytes(32))])


def test_sign_note_needs_signers():
    with pytest.raises(ValueError):
        sign_note(b"x\n", [])


def test_signature_limits():
    """C2SP: accept at least 16; Go: reject more than 100 signature lines."""
    known = Signer("known", bytes(32))
    others = [Signer(f"other{i}", bytes([i + 1]) * 32) for i in range(100)]
    assert open_note(sign_note(b"t\n", [known, *others[:15]]), [known.verifier()]).verified == ["known"]
    assert open_note(sign_note(b"t\n", [known, *others[:99]]), [known.verifier()]).verified == ["known"]
    too_many = sign_note(b"t\n", [known, *others[:99]]) + sign_note(b"t\n", [others[99]]).split(b"\n\n")[1]
    with pytest.raises(NoteError) as info:
        open_note(too_many, [known.verifier()])
    assert info.value.reason == "malformed"
    with pytest.raises(ValueError):
        sign_note(b"t\n", [known, *others])


def test_same_name_or_same_key_id_is_not_the_key():
    """Unknown unless name AND key ID both match a trusted key."""
    real = Signer("example.com/log", bytes(32))
    impostor = Signer("example.com/log", bytes([7]) * 32)  # same name, other key ID
    note = sign_note(b"t\n", [impostor])
    with pytest.raises(NoteError) as info:
        open_note(note, [real.verifier()])
    assert info.value.reason == "unverified"
    # Same key ID, other name: rename the line's name; still unknown.
    renamed = sign_note(b"t\n", [real]).replace(b"example.com/log ", b"example.com/other ")
    with pytest.raises(NoteError):
        open_note(renamed, [real.verifier()])


def test_repeated_signature_by_a_known_key_is_ignored():
    """Go: after the first signature by a key, later ones by the same key are dropped."""
    s = Signer("k", bytes(32))
    note = sign_note(b"t\n", [s])
    line = note.split(b"\n\n")[1]
    other = sign_note(b"u\n", [s]).split(b"\n\n")[1]  # a valid signature of other text
    assert open_note(note + line, [s.verifier()]).verified == ["k"]
    assert open_note(note + other, [s.verifier()]).verified == ["k"]
    # But if the first one fails, the note is rejected.
    with pytest.raises(NoteError) as info:
        open_note(b"t\n\n" + other + line, [s.verifier()])
    assert info.value.reason == "bad_signature"


def test_repeated_unknown_signatures_listed_once():
    s, u = Signer("k", bytes(32)), Signer("u", bytes([1]) * 32)
    note = sign_note(b"t\n", [s, u])
    opened = open_note(note + note.split(b"\n\n")[1].split(b"\n")[1] + b"\n", [s.verifier()])
    assert opened.unknown == ["u"]


def test_ambiguous_trusted_keys():
    a, b = Signer("k", bytes(32)), Signer("k", bytes([9]) * 32)
    vb = b.verifier()
    object.__setattr__(vb, "key_hash", a.key_hash)  # a 32-bit key ID collision
    with pytest.raises(NoteError) as info:
        open_note(sign_note(b"t\n", [a]), [a.verifier(), vb])
    assert info.value.reason == "ambiguous_key"
    # The same key given twice is not ambiguous.
    assert open_note(sign_note(b"t\n", [a]), [a.verifier(), a.verifier()]).verified == ["k"]


def test_failing_known_signature_rejects_even_with_a_good_one():
    a, b = Signer("a", bytes(32)), Signer("b", bytes([2]) * 32)
    note = sign_note(b"t\n", [a, b])
    blob = base64.b64decode(note.split(b"\n")[-2].split(b" ")[2])
    bad = base64.b64encode(blob[:4] + bytes(64))
    forged = b"\n".join(note.split(b"\n")[:-2] + [b"\xe2\x80\x94 b " + bad, b""])
    with pytest.raises(NoteError) as info:
        open_note(forged, [a.verifier(), b.verifier()])
    assert info.value.reason == "bad_signature"
    assert open_note(forged, [a.verifier()]).verified == ["a"]  # b unknown: ignored


@pytest.mark.parametrize(
    "note",
    [
        "t\n\n\u2014 k\n",  # no signature after the name
        "t\n\n\u2014 k \n",  # empty signature
        "t\n\n\u2014 k AAAA\n",  # fewer than 5 bytes
        "t\n\n\u2014 k AAAAAAAA AAAA\n",  # a second space
        "t\n\n\u2014 k AAAAAAA\n",  # not padded base64
        "t\n\n\u2014 k+x AAAAAAAA\n",  # '+' in the name
        "t\n\n\u2014 k\u00a0x AAAAAAAA\n",  # a Unicode space in the name
        "t\n\n\u2014  AAAAAAAA\n",  # empty name
        "t\n\n- k AAAAAAAA\n",  # hyphen, not em dash
        "t\n\n\u2014k AAAAAAAA\n",  # no space after the dash
        "t\n\n",  # no signature line
        "t\n\n\u2014 k AAAAAAAA\n\n",  # blank line at the end
        "t\r\n\n\u2014 k AAAAAAAA\n",  # CR
    ],
)
def test_malformed_notes(note):
    with pytest.raises(NoteError) as info:
        open_note(note.encode(), [Signer("k", bytes(32)).verifier()])
    assert info.value.reason == "malformed"


def test_invalid_utf8_is_malformed():
    with pytest.raises(NoteError) as info:
        open_note(b"t\xff\n\n\xe2\x80\x94 k AAAAAAAA\n", [])
    assert info.value.reason == "malformed"


# --- key strings ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\u3000b", "tab\t", "nl\n"])
def test_invalid_names(name):
    with pytest.raises(ValueError):
        Signer(name, bytes(32))


def test_vkey_split_on_first_two_plus_only():
    vkey = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
    v = Verifier.from_vkey(vkey)
    assert v.name == "sum.golang.org" and v.key_hash.hex() == "033de0ae"


def test_vkey_uppercase_hex_accepted_like_go():
    v = Verifier.from_vkey(PETER.replace("c74f20a3", "C74F20A3"))
    assert v.key_hash.hex() == "c74f20a3"


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "Peter+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # name not the hashed one
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not base64
        "PeterNeumann+c74f20a3+AhpcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # bad length
        "PeterNeumann+c74f20a3",  # no key
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
        "",
    ],
)
def test_bad_vkeys(vkey):
    with pytest.raises(KeyFileError):
        Verifier.from_vkey(vkey)


def test_vkey_algorithm_byte_must_be_ed25519():
    pub = base64.b64decode(PETER.split("+", 2)[2])[1:]
    raw = b"\x02" + pub
    kid = hashlib.sha256(b"PeterNeumann\n" + raw).digest()[:4].hex()
    with pytest.raises(KeyFileError, match="algorithm"):
        Verifier.from_vkey(f"PeterNeumann+{kid}+{base64.b64encode(raw).decode()}")


@pytest.mark.parametrize(
    "skey",
    [
        "PRIVATE+KEY+PeterNeumann+c74f20a4+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AoEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKD",
        "PRIVATE+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        PETER,
    ],
)
def test_bad_signer_keys_never_echo_the_key(skey):
    with pytest.raises(KeyFileError) as info:
        notes.parse_signer_key(skey)
    assert "AYEKFALV" not in str(info.value) and "EKFALV" not in str(info.value)


def test_signer_repr_has_no_secret():
    s = notes.parse_signer_key(PETER_SKEY)
    assert "AYEKFALV" not in repr(s) and s.seed().hex() not in repr(s)
    assert repr(s) == "Signer('PeterNeumann+c74f20a3')"


# --- key files --------------------------------------------------------------------------------


def test_signer_key_file_round_trip(tmp_path):
    s = notes.generate_signer("example.com/audit")
    path = tmp_path / "signer.key"
    vkey = notes.write_signer_key_file(path, s)
    assert vkey == s.verifier_key()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == notes.format_signer_key(s) + "\n"
    loaded = notes.load_signer_key_file(path)
    assert loaded.verifier_key() == vkey and loaded.seed() == s.seed()
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        notes.write_signer_key_file(path, notes.generate_signer("other"))
    assert path.read_bytes() == before


def test_signer_key_file_errors(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        notes.load_signer_key_file(tmp_path / "missing")
    bad = tmp_path / "bad.key"
    bad.write_text(PETER_SKEY.replace("c74f20a3", "00000000") + "\n")
    with pytest.raises(KeyFileError) as info:
        notes.load_signer_key_file(bad)
    assert "AYEKFALV" not in str(info.value) and str(bad) in str(info.value)
    (tmp_path / "bin.key").write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFileError):
        notes.load_signer_key_file(tmp_path / "bin.key")
    with pytest.raises(KeyFileError):
        notes.write_signer_key_file(tmp_path / "no" / "dir" / "k", notes.generate_signer("x"))


def test_load_verifier_keys_values_and_files(tmp_path):
    a, b, c = (notes.generate_signer(n) for n in ("a.example", "b.example", "c.example"))
    keys = tmp_path / "trusted.vkeys"
    keys.write_text(f"# trusted logs\n\n{a.verifier_key()}\n  {b.verifier_key()}  \n{a.verifier_key()}\n")
    got = notes.load_verifier_keys([str(keys), c.verifier_key(), b.verifier_key()])
    assert [v.vkey() for v in got] == [a.verifier_key(), b.verifier_key(), c.verifier_key()]
    assert notes.load_verifier_keys([]) == []


def test_load_verifier_keys_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n\n")
    with pytest.raises(KeyFileError, match="holds no key"):
        notes.load_verifier_keys([str(empty)])
    private = tmp_path / "private"
    private.write_text(PETER_SKEY + "\n")
    with pytest.raises(KeyFileError, match="private") as info:
        notes.load_verifier_keys([str(private)])
    assert "AYEKFALV" not in str(info.value)
    bad = tmp_path / "bad"
    bad.write_text(PETER + "\nnot-a-key\n")
    with pytest.raises(KeyFileError, match="line 2"):
        notes.load_verifier_keys([str(bad)])
    with pytest.raises(KeyFileError, match="cannot be read"):
        notes.load_verifier_keys([str(tmp_path / "missing")])
    with pytest.raises(KeyFileError):
        notes.load_verifier_keys([PETER.replace("c74f20a3", "c74f20a4")])


# --- signatures kept in checkpoint lines --------------------------------------------------------


def test_checkpoint_sig_rebuilds_the_note():
    s = Signer("example.com/audit-ledger-test", bytes(32))
    vec = next(v for v in VECTORS if v["id"].startswith("derived: checkpoint over RFC6962"))
    text = vec["expect_text"].encode()
    entry = notes.checkpoint_sig(s, text)
    assert entry["alg"] == "ed25519" and entry["key"] == "example.com/audit-ledger-test+a4f9090e"
    hmac_entry = {"alg": "hmac-sha256", "key": "0" * 16, "sig": "AAAA"}
    assert notes.note_from_sigs(text, [hmac_entry, entry]) == vec["signed_note"].encode()
    with pytest.raises(ValueError):
        notes.note_from_sigs(text, [hmac_entry])
    with pytest.raises(ValueError):
        notes.note_from_sigs(text, [{**entry, "key": "example.com/audit-ledger-test+00000000"}])
