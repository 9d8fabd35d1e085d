"""Forward-secure sealing: a one-way HMAC key ratchet, one key per time interval.

Like journald's Forward Secure Sealing. The auditor keeps a 32-byte seed; the
writer holds only the key of the current epoch and replaces it with the next one
at every interval, so whoever takes the host later cannot sign for earlier epochs::

    k_0     = SHA-256("ledger-fs-v1" || 0x00 || seed)
    k_(e+1) = SHA-256("ledger-fs-v1 next" || 0x00 || k_e)
    epoch e = floor((t - t0) / interval_s)        t0, interval_s: integer seconds
    seed_id = first 16 hex of SHA-256("ledger-fs-v1 id" || 0x00 || seed)
    sig     = {"alg": "hmac-sha256-fs", "key": "fs:<seed_id>:<e>",
               "sig": base64(HMAC-SHA256(k_e, checkpoint text))}

``<e>`` is decimal without leading zeros. A verifier recomputes k_e from the seed
and compares in constant time.

The pure part is the ratchet (``FsRatchet``) and its check (``fs_verify``,
``FsVerifier``). The file helpers write the seed file (the auditor's, mode 0600,
never overwritten) and the writer's state file (current key, epoch, t0, interval;
replaced atomically: temp file, fsync, rename, fsync of the directory).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec

from .errors import FsSealError, KeyFileError
from .files import replace_atomic
from .keys import create_secret_file
from .regular import open_regular

ALG = "hmac-sha256-fs"
SEED_BYTES = 32
DEFAULT_INTERVAL_S = 900  # 15 minutes, journald's default sealing interval
# Recomputing k_e costs e hashes: a verifier refuses epochs above this unless told
# otherwise (2**22 epochs is 119 years at 15 minutes, about 2 s of hashing).
DEFAULT_MAX_EPOCH = 1 << 22
_STRIDE = 1024  # FsVerifier keeps every 1024th key to answer many epochs quickly

_K0 = b"ledger-fs-v1\x00"
_NEXT = b"ledger-fs-v1 next\x00"
_ID = b"ledger-fs-v1 id\x00"
_LABEL = re.compile(r"^fs:([0-9a-f]{16}):(0|[1-9][0-9]{0,18})$")
_B64_32 = re.compile(r"^[A-Za-z0-9+/]{43}=$")


# ---- the ratchet, pure --------------------------------------------------------------


def initial_key(seed: bytes) -> bytes:
    """k_0 = SHA-256("ledger-fs-v1" || 0x00 || seed)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a sealing seed is {SEED_BYTES} bytes")
    return hashlib.sha256(_K0 + seed).digest()


def next_key(key: bytes) -> bytes:
    """k_(e+1) = SHA-256("ledger-fs-v1 next" || 0x00 || k_e): one way."""
    return hashlib.sha256(_NEXT + key).digest()


def seed_id(seed: bytes) -> str:
    """The public name of a seed: first 16 hex of SHA-256("ledger-fs-v1 id" || 0x00 || seed)."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a sealing seed is {SEED_BYTES} bytes")
    return hashlib.sha256(_ID + seed).hexdigest()[:16]


def epoch_key(seed: bytes, epoch: int) -> bytes:
    """k_epoch from the seed (epoch hashes). Precondition: epoch >= 0."""
    if epoch < 0:
        raise ValueError("epoch must be >= 0")
    key = initial_key(seed)
    for _ in range(epoch):
        key = next_key(key)
    return key


def epoch_of(t: float, t0: int, interval_s: int) -> int:
    """floor((t - t0) / interval_s); raises FsSealError for t before t0."""
    if t < t0:
        raise FsSealError(f"time {t} is before the sealing start t0={t0}")
    return int((t - t0) // interval_s)


def key_label(sid: str, epoch: int) -> str:
    return f"fs:{sid}:{epoch}"


def parse_key_label(label: str) -> tuple[str, int] | None:
    """(seed_id, epoch) from ``fs:<16 hex>:<decimal>``, or None if malformed."""
    m = _LABEL.match(label) if isinstance(label, str) else None
    return (m.group(1), int(m.group(2))) if m else None


def _mac(key: bytes, text: bytes) -> bytes:
    return hmac.new(key, text, hashlib.sha256).digest()


def _check_interval(t0: int, interval_s: int) -> None:
    if not isinstance(t0, int) or not isinstance(interval_s, int) or interval_s < 1 or t0 < 0:
        raise ValueError("t0 and interval_s are integer seconds, interval_s >= 1")


class FsRatchet:
    """The writer's side: the key of one epoch, never an earlier one.

    ``advance_to`` replaces the key by a later epoch's and drops the old one (Python
    cannot wipe the old bytes object; it is unreferenced and left to the collector).
    """

    __slots__ = ("_key", "epoch", "t0", "interval_s", "seed_id")

    def __init__(self, key: bytes, epoch: int, t0: int, interval_s: int, seed_id: str) -> None:
        """Resume from k_epoch. To start from a seed use ``from_seed``."""
        if len(key) != 32 or epoch < 0 or not re.fullmatch(r"[0-9a-f]{16}", seed_id):
            raise ValueError("a ratchet needs a 32-byte key, an epoch >= 0 and a 16-hex seed id")
        _check_interval(t0, interval_s)
        self._key = bytes(key)
        self.epoch = epoch
        self.t0 = t0
        self.interval_s = interval_s
        self.seed_id = seed_id

    @classmethod
    def from_seed(cls, seed: bytes, t0: int, interval_s: int, epoch: int = 0) -> FsRatchet:
        return cls(epoch_key(seed, epoch), epoch, t0, interval_s, seed_id(seed))

    def __repr__(self) -> str:  # never the key
        return f"FsRatchet(seed_id={self.seed_id!r}, epoch={self.epoch})"

    def epoch_at(self, t: float) -> int:
        return epoch_of(t, self.t0, self.interval_s)

    def advance_to(self, epoch: int) -> bool:
        """Move to ``epoch`` (>= the current one); True if the key changed."""
        if epoch < self.epoch:
            raise FsSealError(f"cannot go back from epoch {self.epoch} to {epoch}: earlier keys are gone")
        if epoch == self.epoch:
            return False
        key = self._key
        for _ in range(epoch - self.epoch):
            key = next_key(key)
        self._key = key
        self.epoch = epoch
        return True

    def sign(self, text: bytes, now: float) -> dict:
        """The signature of ``text`` with the key of ``now``'s epoch (advancing to it).

        Raises FsSealError if ``now`` falls in an epoch before the current one (the
        clock went back). Persist the state (``tick``/``write_fs_state``) when the
        epoch changes, before the signature leaves the process.
        """
        self.advance_to(self.epoch_at(now))
        return {
            "alg": ALG,
            "key": key_label(self.seed_id, self.epoch),
            "sig": base64.b64encode(_mac(self._key, text)).decode("ascii"),
        }

    def state(self) -> FsState:
        return FsState(
            seed_id=self.seed_id, epoch=self.epoch, key=self._key.hex(), t0=self.t0, interval_s=self.interval_s
        )


# ---- verifying, with the seed -------------------------------------------------------


@dataclass(frozen=True)
class FsSeed:
    """The auditor's secret: the seed and the clock it was started with."""

    seed: bytes
    t0: int
    interval_s: int

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES:
            raise ValueError(f"a sealing seed is {SEED_BYTES} bytes")
        _check_interval(self.t0, self.interval_s)

    def __repr__(self) -> str:  # never the seed
        return f"FsSeed(seed_id={self.seed_id!r}, t0={self.t0}, interval_s={self.interval_s})"

    @property
    def seed_id(self) -> str:
        return seed_id(self.seed)

    def epoch_at(self, t: float) -> int:
        return epoch_of(t, self.t0, self.interval_s)


def _sig_fields(sig: object) -> tuple[object, object, object]:
    if isinstance(sig, dict):
        return sig.get("alg"), sig.get("key"), sig.get("sig")
    return getattr(sig, "alg", None), getattr(sig, "key", None), getattr(sig, "sig", None)


class FsVerifier:
    """Checks many ``hmac-sha256-fs`` signatures of one seed, keeping every 1024th key."""

    def __init__(self, seed: bytes | FsSeed, max_epoch: int = DEFAULT_MAX_EPOCH) -> None:
        raw = seed.seed if isinstance(seed, FsSeed) else bytes(seed)
        self.seed_id = seed_id(raw)
        self.max_epoch = max_epoch
        self._anchors = [initial_key(raw)]  # k_0, k_1024, k_2048, ...

    def key_at(self, epoch: int) -> bytes:
        """k_epoch. Precondition: 0 <= epoch <= max_epoch."""
        if not 0 <= epoch <= self.max_epoch:
            raise ValueError(f"epoch {epoch} outside 0..{self.max_epoch}")
        anchors = self._anchors
        while len(anchors) <= epoch // _STRIDE:
            key = anchors[-1]
            for _ in range(_STRIDE):
                key = next_key(key)
            anchors.append(key)
        key = anchors[epoch // _STRIDE]
        for _ in range(epoch % _STRIDE):
            key = next_key(key)
        return key

    def epoch_of_sig(self, sig: object) -> int | None:
        """The epoch a well-formed signature of this seed names, else None."""
        alg, label, _ = _sig_fields(sig)
        parsed = parse_key_label(label) if alg == ALG else None
        if parsed is None or parsed[0] != self.seed_id:
            return None
        return parsed[1]

    def verify(self, sig: object, text: bytes, expected_epoch: int | None = None) -> bool:
        """True if ``sig`` ({alg, key, sig} dict or format.Sig) is this seed's MAC of ``text``.

        Rejected: another alg, a malformed key label, another seed, an epoch above
        ``max_epoch`` or other than ``expected_epoch`` when given, a MAC that is not
        base64 of 32 bytes, a MAC that differs (compared in constant time).
        """
        epoch = self.epoch_of_sig(sig)
        if epoch is None or epoch > self.max_epoch or (expected_epoch is not None and epoch != expected_epoch):
            return False
        mac64 = _sig_fields(sig)[2]
        if not isinstance(mac64, str) or not _B64_32.match(mac64):
            return False
        try:
            found = base64.b64decode(mac64, validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(_mac(self.key_at(epoch), text), found)


def fs_verify(
    seed: bytes | FsSeed,
    sig: object,
    text: bytes,
    *,
    expected_epoch: int | None = None,
    max_epoch: int = DEFAULT_MAX_EPOCH,
) -> bool:
    """Check one ``hmac-sha256-fs`` signature against the seed (see FsVerifier.verify)."""
    return FsVerifier(seed, max_epoch).verify(sig, text, expected_epoch)


# ---- files ------------------------------------------------------------------------------

_HEX64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
_SID = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{16}$")]
_NONNEG = Annotated[int, msgspec.Meta(ge=0)]
_POS = Annotated[int, msgspec.Meta(ge=1)]


class SeedFile(msgspec.Struct, forbid_unknown_fields=True):
    """The seed file (auditor's secret): one JSON object, one line."""

    v: int
    alg: str
    seed_id: _SID
    seed: _HEX64
    t0: _NONNEG
    interval_s: _POS


class FsState(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The writer state file: the current epoch key and no other."""

    v: int = 1
    alg: str = ALG
    seed_id: _SID
    epoch: _NONNEG
    key: _HEX64
    t0: _NONNEG
    interval_s: _POS

    def __repr__(self) -> str:  # never the key
        return f"FsState(seed_id={self.seed_id!r}, epoch={self.epoch})"


_encode = msgspec.json.Encoder().encode
_seed_decoder = msgspec.json.Decoder(SeedFile)
_state_decoder = msgspec.json.Decoder(FsState)


def write_fs_seed(
    path: str | os.PathLike[str],
    *,
    t0: int | None = None,
    interval_s: int = DEFAULT_INTERVAL_S,
    seed: bytes | None = None,
) -> FsRatchet:
    """Create a new seed file (mode 0600, never overwriting) and return the writer's
    initial ratchet (epoch 0). ``t0`` defaults to now (whole seconds); ``seed`` to
    32 random bytes. The seed file belongs to the auditor: move it off the host."""
    if t0 is None:
        t0 = int(time.time())
    raw = os.urandom(SEED_BYTES) if seed is None else bytes(seed)
    ratchet = FsRatchet.from_seed(raw, t0, interval_s)
    record = SeedFile(v=1, alg=ALG, seed_id=seed_id(raw), seed=raw.hex(), t0=t0, interval_s=interval_s)
    create_secret_file(path, _encode(record) + b"\n", "sealing seed", "seed file")
    return ratchet


def load_fs_seed(path: str | os.PathLike[str]) -> FsSeed:
    """Read a seed file; raises KeyFileError naming the file, never its content."""
    record = _decode_file(path, _seed_decoder, "seed")
    seed = bytes.fromhex(record.seed)
    if record.v != 1 or record.alg != ALG or seed_id(seed) != record.seed_id:
        raise KeyFileError(f"bad seed file {path}: wrong version, algorithm or seed id")
    return FsSeed(seed=seed, t0=record.t0, interval_s=record.interval_s)


def write_fs_state(path: str | os.PathLike[str], ratchet: FsRatchet) -> None:
    """Replace the writer state file atomically with ``ratchet``'s current state.

    ``files.replace_atomic``: a temp file in the same directory (0600, O_EXCL) is
    written and fsynced, renamed over ``path``, then the directory is fsynced. The
    file holds one key: the current.
    """
    target = Path(path)
    try:
        replace_atomic(target, _encode(ratchet.state()) + b"\n")
    except OSError as exc:
        raise KeyFileError(f"cannot write sealing state {target}: {exc.strerror}") from None


def load_fs_state(path: str | os.PathLike[str]) -> FsRatchet:
    """Read the writer state file; raises KeyFileError."""
    st = _decode_file(path, _state_decoder, "sealing state")
    if st.v != 1 or st.alg != ALG:
        raise KeyFileError(f"bad sealing state {path}: wrong version or algorithm")
    return FsRatchet(bytes.fromhex(st.key), st.epoch, st.t0, st.interval_s, st.seed_id)


def tick(path: str | os.PathLike[str], ratchet: FsRatchet, now: float) -> bool:
    """Advance ``ratchet`` to ``now``'s epoch and, if it moved, persist it; True if it moved.

    The writer calls this at every interval boundary (even when idle, so an older
    key is not left on the host) and before signing with the same ``now``.
    """
    moved = ratchet.advance_to(ratchet.epoch_at(now))
    if moved:
        write_fs_state(path, ratchet)
    return moved


def _decode_file(path: str | os.PathLike[str], decoder: msgspec.json.Decoder, what: str):
    try:
        with open_regular(path) as f:
            data = f.read(4096)
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} file {path}: {exc.strerror}") from None
    try:
        return decoder.decode(data.rstrip(b"\n"))
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise KeyFileError(f"bad {what} file {path}: not the expected JSON object") from None
