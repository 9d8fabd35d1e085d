"""Tests for ledger.fsseal: the forward-secure sealing ratchet.

1. The ratchet's definition, recomputed here with hashlib and hmac straight from the
   text (k_0, k_(e+1), seed_id, epoch, label, MAC), and known-answer values pinned.
2. Signing and verifying: the seed accepts; another seed, another epoch, altered text,
   MAC or label, and malformed signatures are rejected.
3. Forward security as the code can show it: the ratchet never goes back, and the
   state file, rewritten at every epoch, never holds the seed or an earlier key.
4. Seed and state files: mode 0600, never overwriting the seed, atomic replacement
   (no temp file left), resuming after a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat

import msgspec
import pytest

from ledger import fsseal
from ledger.errors import KeyFileError
from ledger.fsseal import FsRatchet, FsSealError, FsSeed, FsVerifier, fs_verify

SEED = bytes(range(32))
T0 = 1_795_464_000  # 2026-11-23T20:00:00Z
INTERVAL = 900
TEXT = b"ledger/edge-1/20261123T200000.000000Z-t01\n5\n" + base64.b64encode(bytes(32)) + b"\n"


# --- 1. the definition, recomputed from its text ----------------------------------------


def ref_key(seed: bytes, epoch: int) -> bytes:
    k = hashlib.sha256(b"ledger-fs-v1\x00" + seed).digest()
    for _ in range(epoch):
        k = hashlib.sha256(b"ledger-fs-v1 next\x00" + k).digest()
    return k


def ref_sig(seed: bytes, epoch: int, text: bytes) -> dict:
    sid = hashlib.sha256(b"ledger-fs-v1 id\x00" + seed).hexdigest()[:16]
    mac = hmac.new(ref_key(seed, epoch), text, hashlib.sha256).digest()
    return {"alg": "hmac-sha256-fs", "key": f"fs:{sid}:{epoch}", "sig": base64.b64encode(mac).decode()}


def test_definition_matches_text():
    assert fsseal.initial_key(SEED) == ref_key(SEED, 0)
    assert fsseal.epoch_key(SEED, 7) == ref_key(SEED, 7)
    assert fsseal.next_key(ref_key(SEED, 3)) == ref_key(SEED, 4)
    assert fsseal.seed_id(SEED) == hashlib.sha256(b"ledger-fs-v1 id\x00" + SEED).hexdigest()[:16]


def test_known_answers():
    """Pinned values (seed = bytes 0..31) for other implementations of the text."""
    assert fsseal.seed_id(SEED) == "cf994a4302f5e354"
    assert fsseal.epoch_key(SEED, 0).hex() == "c1a2e2bb5afaa192bb724b1c3073a738a06634836d9446e946326d9848c90fda"
    assert fsseal.epoch_key(SEED, 1).hex() == "d73f1da5797cc6d689dda08fc4dd0823f500ed4984402eabf7a8e050452e63f9"
    assert fsseal.epoch_key(SEED, 1000).hex() == "76b615e891e57b801376d75ace0ae61f54d102f5c62d001e2f08ecac63568a32"
    assert FsRatchet.from_seed(SEED, T0, INTERVAL).sign(TEXT, T0 + 5 * INTERVAL) == {
        "alg": "hmac-sha256-fs",
        "key": "fs:cf994a4302f5e354:5",
        "sig": "YqjU/r6/ALSsyFPwyL5twqzAiQ3AtJsqrSuj0+vwJvk=",
    }


def test_ratchet_is_deterministic():
    a = FsRatchet.from_seed(SEED, T0, INTERVAL)
    b = FsRatchet.from_seed(SEED, T0, INTERVAL, epoch=5)
    a.advance_to(5)
    assert a.state() == b.state()
    assert a.sign(TEXT, T0 + 5 * INTERVAL) == b.sign(TEXT, T0 + 5 * INTERVAL) == ref_sig(SEED, 5, TEXT)


@pytest.mark.parametrize(
    ("t", "epoch"),
    [(T0, 0), (T0 + 0.5, 0), (T0 + INTERVAL - 1e-6, 0), (T0 + INTERVAL, 1), (T0 + 10 * INTERVAL + 1, 10)],
)
def test_epoch_of(t, epoch):
    assert fsseal.epoch_of(t, T0, INTERVAL) == epoch


def test_epoch_before_t0_is_an_error():
    with pytest.raises(FsSealError):
        fsseal.epoch_of(T0 - 1, T0, INTERVAL)


@pytest.mark.parametrize(
    "args",
    [
        (bytes(31), 0, T0, INTERVAL, "0" * 16),
        (bytes(32), -1, T0, INTERVAL, "0" * 16),
        (bytes(32), 0, T0, 0, "0" * 16),
        (bytes(32), 0, T0, INTERVAL, "xyz"),
        (bytes(32), 0, 1.5, INTERVAL, "0" * 16),
    ],
)
def test_ratchet_rejects_bad_parameters(args):
    with pytest.raises(ValueError):
        FsRatchet(*args)


# --- 2. sign and verify -----------------------------------------------------------------------


def test_verify_with_seed_accepts_every_epoch():
    r = FsRatchet.from_seed(SEED, T0, INTERVAL)
    v = FsVerifier(FsSeed(SEED, T0, INTERVAL))
    for epoch in (0, 1, 2, 1023, 1024, 1025, 3000):
        sig = r.sign(TEXT, T0 + epoch * INTERVAL + 17)
        assert sig["key"] == f"fs:{fsseal.seed_id(SEED)}:{epoch}"
        assert sig == ref_sig(SEED, epoch, TEXT)
        assert fs_verify(SEED, sig, TEXT)
        assert v.verify(sig, TEXT, expected_epoch=epoch)
        assert v.key_at(epoch) == ref_key(SEED, epoch)
    # Out of order after the walk: the verifier's cache answers earlier epochs too.
    assert v.key_at(5) == ref_key(SEED, 5)


def test_verify_accepts_a_format_sig_struct():
    from ledger.format import Sig

    sig = FsRatchet.from_seed(SEED, T0, INTERVAL).sign(TEXT, T0)
    assert fs_verify(SEED, Sig(**sig), TEXT)


def test_wrong_seed_epoch_text_or_mac_rejected():
    sig = FsRatchet.from_seed(SEED, T0, INTERVAL, epoch=3).sign(TEXT, T0 + 3 * INTERVAL)
    other = bytes(range(1, 33))
    assert not fs_verify(other, sig, TEXT)  # another seed: its id differs
    # Another seed relabelled with this seed's id still fails on the MAC.
    forged = FsRatchet.from_seed(other, T0, INTERVAL, epoch=3).sign(TEXT, T0 + 3 * INTERVAL)
    forged["key"] = sig["key"]
    assert not fs_verify(SEED, forged, TEXT)
    for epoch in (2, 4):
        assert not fs_verify(SEED, {**sig, "key": f"fs:{fsseal.seed_id(SEED)}:{epoch}"}, TEXT)
    assert not fs_verify(SEED, sig, TEXT + b"x")
    assert not fs_verify(SEED, sig, TEXT, expected_epoch=4)
    assert fs_verify(SEED, sig, TEXT, expected_epoch=3)
    mac = bytearray(base64.b64decode(sig["sig"]))
    mac[0] ^= 1
    assert not fs_verify(SEED, {**sig, "sig": base64.b64encode(bytes(mac)).decode()}, TEXT)


@pytest.mark.parametrize(
    "change",
    [
        {"alg": "hmac-sha256"},
        {"key": "fs:0123456789abcdef:3"},
        {"key": "fs:{sid}:03"},
        {"key": "fs:{sid}:-3"},
        {"key": "fs:{sid}:3 "},
        {"key": "fs:{SID}:3"},
        {"key": "fs:{sid}"},
        {"key": 3},
        {"sig": "not base64"},
        {"sig": ""},
        {"sig": None},
        {"sig": base64.b64encode(bytes(31)).decode()},
    ],
)
def test_malformed_signatures_rejected(change):
    sig = FsRatchet.from_seed(SEED, T0, INTERVAL, epoch=3).sign(TEXT, T0 + 3 * INTERVAL)
    sid = fsseal.seed_id(SEED)
    changed = {k: (v.format(sid=sid, SID=sid.upper()) if isinstance(v, str) else v) for k, v in change.items()}
    assert not fs_verify(SEED, {**sig, **changed}, TEXT)
    assert not fs_verify(SEED, {k: v for k, v in sig.items() if k not in change}, TEXT)


def test_huge_epoch_rejected_without_hashing_forever():
    sid = fsseal.seed_id(SEED)
    sig = {"alg": "hmac-sha256-fs", "key": f"fs:{sid}:{10**18}", "sig": base64.b64encode(bytes(32)).decode()}
    assert not fs_verify(SEED, sig, TEXT)  # above DEFAULT_MAX_EPOCH: refused at once
    small = FsRatchet.from_seed(SEED, T0, INTERVAL, epoch=50).sign(TEXT, T0 + 50 * INTERVAL)
    assert not fs_verify(SEED, small, TEXT, max_epoch=49)
    assert fs_verify(SEED, small, TEXT, max_epoch=50)


# --- 3. forward security ------------------------------------------------------------------------


def test_ratchet_never_goes_back():
    r = FsRatchet.from_seed(SEED, T0, INTERVAL, epoch=4)
    with pytest.raises(FsSealError):
        r.advance_to(3)
    with pytest.raises(FsSealError):
        r.sign(TEXT, T0 + 3 * INTERVAL)  # a clock that went back cannot sign the past
    assert r.advance_to(4) is False
    assert r.advance_to(6) is True and r.epoch == 6


def test_ratchet_holds_only_the_current_key():
    r = FsRatchet.from_seed(SEED, T0, INTERVAL)
    r.advance_to(9)
    held = [getattr(r, name) for name in FsRatchet.__slots__]
    keys = [x for x in held if isinstance(x, bytes)]
    assert keys == [ref_key(SEED, 9)]
    assert SEED not in held
    assert ref_key(SEED, 9).hex() not in repr(r)


def _older_secrets(epoch: int) -> list[bytes]:
    return [SEED.hex().encode()] + [ref_key(SEED, e).hex().encode() for e in range(epoch)]


def test_state_file_never_holds_an_older_key(tmp_path):
    state = tmp_path / "fs.state"
    r = FsRatchet.from_seed(SEED, T0, INTERVAL)
    fsseal.write_fs_state(state, r)
    for epoch in (0, 1, 2, 5, 6, 40):
        assert fsseal.tick(state, r, T0 + epoch * INTERVAL + 1) is (epoch != 0)
        data = state.read_bytes()
        assert ref_key(SEED, epoch).hex().encode() in data
        for secret in _older_secrets(epoch):
            assert secret not in data
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fs.state"]  # no temp file left


def test_state_file_content(tmp_path):
    state = tmp_path / "fs.state"
    r = FsRatchet.from_seed(SEED, T0, INTERVAL, epoch=12)
    fsseal.write_fs_state(state, r)
    record = msgspec.json.decode(state.read_bytes())
    assert record == {
        "v": 1,
        "alg": "hmac-sha256-fs",
        "seed_id": fsseal.seed_id(SEED),
        "epoch": 12,
        "key": ref_key(SEED, 12).hex(),
        "t0": T0,
        "interval_s": INTERVAL,
    }


def test_resume_after_restart(tmp_path):
    state = tmp_path / "fs.state"
    r = FsRatchet.from_seed(SEED, T0, INTERVAL)
    fsseal.tick(state, r, T0 + 7 * INTERVAL)
    del r
    resumed = fsseal.load_fs_state(state)
    assert resumed.epoch == 7 and resumed.seed_id == fsseal.seed_id(SEED)
    assert fsseal.tick(state, resumed, T0 + 7 * INTERVAL + 5) is False
    sig = resumed.sign(TEXT, T0 + 7 * INTERVAL + 5)
    assert fs_verify(SEED, sig, TEXT, expected_epoch=7)
    with pytest.raises(FsSealError):
        resumed.sign(TEXT, T0 + 6 * INTERVAL)


def test_bad_state_files(tmp_path):
    with pytest.raises(KeyFileError, match="cannot read"):
        fsseal.load_fs_state(tmp_path / "missing")
    bad = tmp_path / "bad"
    for content in (b"", b"{}", b"not json", b'{"v":1}'):
        bad.write_bytes(content)
        with pytest.raises(KeyFileError):
            fsseal.load_fs_state(bad)
    good = msgspec.json.encode(FsRatchet.from_seed(SEED, T0, INTERVAL).state())
    record = msgspec.json.decode(good)
    for change in ({"alg": "hmac-sha256"}, {"v": 2}, {"key": "00"}, {"extra": 1}, {"epoch": -1}):
        bad.write_bytes(msgspec.json.encode({**record, **change}))
        with pytest.raises(KeyFileError) as info:
            fsseal.load_fs_state(bad)
        assert record["key"] not in str(info.value)
    with pytest.raises(KeyFileError):
        fsseal.write_fs_state(tmp_path / "no" / "dir" / "state", FsRatchet.from_seed(SEED, T0, INTERVAL))


# --- 4. the seed file ---------------------------------------------------------------------------


def test_seed_file(tmp_path):
    path = tmp_path / "fs.seed"
    r = fsseal.write_fs_seed(path, t0=T0, interval_s=INTERVAL, seed=SEED)
    assert (r.epoch, r.t0, r.interval_s, r.seed_id) == (0, T0, INTERVAL, fsseal.seed_id(SEED))
    assert r.state().key == ref_key(SEED, 0).hex()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = fsseal.load_fs_seed(path)
    assert loaded == FsSeed(SEED, T0, INTERVAL)
    assert SEED.hex() not in repr(loaded)
    assert loaded.epoch_at(T0 + 3 * INTERVAL) == 3
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        fsseal.write_fs_seed(path, t0=T0)
    assert path.read_bytes() == before
    sig = r.sign(TEXT, T0 + 2 * INTERVAL)
    assert fs_verify(loaded, sig, TEXT)


def test_seed_file_defaults_and_errors(tmp_path):
    r = fsseal.write_fs_seed(tmp_path / "a.seed")
    seed = fsseal.load_fs_seed(tmp_path / "a.seed")
    assert r.seed_id == seed.seed_id and seed.interval_s == fsseal.DEFAULT_INTERVAL_S
    assert fs_verify(seed, r.sign(TEXT, seed.t0), TEXT)
    bad = tmp_path / "bad.seed"
    record = msgspec.json.decode((tmp_path / "a.seed").read_bytes())
    bad.write_bytes(msgspec.json.encode({**record, "seed_id": "0" * 16}))
    with pytest.raises(KeyFileError) as info:
        fsseal.load_fs_seed(bad)
    assert record["seed"] not in str(info.value)
    with pytest.raises(KeyFileError):
        fsseal.load_fs_seed(tmp_path / "missing")
