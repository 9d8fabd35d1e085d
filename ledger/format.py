"""The ledger v1 wire format (SPEC.md sections 2-4): bytes in, bytes out.

An event ``E_i`` is the compact JSON object ``{"v":1,"seq":i,"ts":...,"kind":...,"data":{...}}``.
Line i of a session file is ``E_i`` with ``,"chain":"<hex C_i>"`` spliced in before
its closing brace, then LF. Hashes are always over the bytes as written: nothing
here re-encodes an event it did not build itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from datetime import UTC, datetime
from typing import Annotated

import msgspec

VERSION = 1
ZERO_CHAIN = bytes(32)

# `,"chain":"` + 64 hex + `"}` : every line ends with this trailer (76 bytes), then LF.
CHAIN_KEY = b',"chain":"'
CHAIN_HEX_LEN = 64
TRAILER_LEN = len(CHAIN_KEY) + CHAIN_HEX_LEN + 2
# The chain hex starts this many bytes (66) before the end of a line without its LF.
CHAIN_HEX_BACK = TRAILER_LEN - len(CHAIN_KEY)
# A verifier refuses longer lines without buffering them (SPEC.md 2.1).
MAX_LINE_BYTES = 16 * 2**20
# data nests objects and arrays at most this deep, data itself being level 1 (SPEC.md
# 2.1): a verdict must not depend on how much stack the verifying process has left.
MAX_DATA_DEPTH = 128

KIND_OPENED = "session.opened"
KIND_CHECKPOINT = "ledger.checkpoint"
KIND_SEALED = "session.sealed"
SIGNED_KINDS = frozenset({KIND_CHECKPOINT, KIND_SEALED})

HEX64 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
KIND_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
SESSION_PATTERN = "^[0-9]{8}T[0-9]{6}\\.[0-9]{6}Z-[0-9a-z]{1,32}$"
NAMESPACE_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_KIND_RE = re.compile(KIND_PATTERN)
# A JSON string (escapes included) or one bracket: what nesting depth is made of.
_NESTING_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def nesting_exceeds(data: bytes, limit: int = MAX_DATA_DEPTH) -> bool:
    """True when the JSON text ``data`` nests objects and arrays deeper than ``limit``.

    Cheap for what events look like: text with no more than ``limit`` opening
    brackets cannot nest deeper, so only such rare text is tokenized.
    """
    if len(data) <= 2 * limit or data.count(b"{") + data.count(b"[") <= limit:
        return False
    depth = 0
    for token in _NESTING_TOKEN.finditer(data):
        c = token[0][0]
        if c == 0x7B or c == 0x5B:  # { [
            depth += 1
            if depth > limit:
                return True
        elif c == 0x7D or c == 0x5D:  # } ]
            depth -= 1
    return False


_NAMESPACE_RE = re.compile(NAMESPACE_PATTERN)


# ---- data of the kinds the format itself defines -------------------------------------


class PrevLink(msgspec.Struct, forbid_unknown_fields=True):
    """The previous sealed session of a namespace: its whole tree, seal line included."""

    session: str
    size: int
    root: HEX64
    chain: HEX64


class SessionOpened(msgspec.Struct, kw_only=True):
    session: Annotated[str, msgspec.Meta(pattern=SESSION_PATTERN)]
    origin: str
    prev: PrevLink | None
    # Set when the writer found the previous session corrupt and moved it aside.
    quarantined: str | None = None
    quarantine_reason: str | None = None


class Sig(msgspec.Struct, forbid_unknown_fields=True):
    alg: str
    key: str
    sig: str


COUNT = Annotated[int, msgspec.Meta(ge=0)]  # a drop count: a negative one is bad_checkpoint


class Checkpoint(msgspec.Struct, kw_only=True):
    """data of ``ledger.checkpoint`` at seq n: a signed commitment to events 0..n-1."""

    size: Annotated[int, msgspec.Meta(ge=0)]
    root: HEX64
    chain: HEX64
    sigs: list[Sig]
    # Drop totals so far: an int (total) or counts by reason.
    dropped: COUNT | dict[str, COUNT] | None = None


class Sealed(Checkpoint, kw_only=True):
    """data of ``session.sealed``: the final checkpoint; nothing may follow it.

    Its signatures cover the seal text (``seal_text``), so ``reason`` and the drop
    total are signed too and a checkpoint's signature cannot be replayed as a seal.
    """

    reason: str
    dropped: COUNT | dict[str, COUNT] | None = None  # absent counts as 0 in the seal text
    torn_bytes: int | None = None


_checkpoint_decoder = msgspec.json.Decoder(Checkpoint)
_sealed_decoder = msgspec.json.Decoder(Sealed)
_opened_decoder = msgspec.json.Decoder(SessionOpened)


def decode_checkpoint(kind: str, data: bytes) -> Checkpoint:
    """Decode the data of a checkpoint or seal line; raises msgspec.ValidationError."""
    return (_sealed_decoder if kind == KIND_SEALED else _checkpoint_decoder).decode(data)


def decode_opened(data: bytes) -> SessionOpened:
    return _opened_decoder.decode(data)


def dropped_total(dropped: int | dict[str, int] | None) -> int:
    if dropped is None:
        return 0
    if isinstance(dropped, int):
        return dropped
    return sum(dropped.values())


# ---- building lines (the writer) -----------------------------------------------------


def format_ts(epoch_s: float | None = None) -> str:
    """RFC 3339 UTC with microseconds and Z: 2026-11-23T20:00:01.001234Z."""
    if epoch_s is None:
        epoch_s = time.time()
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_session_id(epoch_s: float | None = None) -> str:
    """Sortable by time: 20261123T200000.000000Z-<8 random hex>."""
    if epoch_s is None:
        epoch_s = time.time()
    stamp = datetime.fromtimestamp(epoch_s, UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{os.urandom(4).hex()}"


def origin_of(namespace: str, session: str) -> str:
    return f"ledger/{namespace}/{session}"


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):  # "$" alone lets "x\n" in
        raise ValueError(f"invalid namespace {namespace!r}: use letters, digits, '.', '_', '-'")
    return namespace


def check_kind(kind: str) -> bool:
    return bool(_KIND_RE.fullmatch(kind))


# encode_event, next_chain and make_line are the readable reference of a line:
# SessionBuilder.line inlines them for speed, and tests/test_format_reference.py
# checks that both write the same bytes for every kind of line.


def encode_event(seq: int, ts: str, kind: str, data_json: bytes) -> bytes:
    """E_i: the compact event object; ``data_json`` is an already encoded JSON object."""
    return b'{"v":1,"seq":%d,"ts":"%s","kind":"%s","data":%s}' % (
        seq,
        ts.encode("ascii"),
        kind.encode("ascii"),
        data_json,
    )


def next_chain(prev_chain: bytes, leaf: bytes) -> bytes:
    """C_i = SHA-256(C_(i-1) || L_i)."""
    return hashlib.sha256(prev_chain + leaf).digest()


def make_line(event: bytes, chain: bytes) -> bytes:
    """Line i: E_i without its closing brace, the chain member, the brace, LF."""
    return event[:-1] + CHAIN_KEY + chain.hex().encode("ascii") + b'"}\n'


def event_of_line(line: bytes) -> bytes:
    """E_i back from a line (with or without its LF): drop the chain member."""
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[:-TRAILER_LEN] + b"}"


def chain_of_line(line: bytes) -> str:
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[-CHAIN_HEX_BACK:-2].decode("ascii")


# ---- checkpoints and signatures -----------------------------------------------------


def checkpoint_text(origin: str, size: int, root: bytes) -> bytes:
    """The C2SP tlog-checkpoint body: origin LF size LF base64(root) LF."""
    return b"%s\n%d\n%s\n" % (origin.encode("utf-8"), size, base64.b64encode(root))


# A seal reason is signed as a word of the extension line: no spaces, no escapes.
_SEAL_REASON_RE = re.compile(r"[a-z][a-z_]{0,31}")


def valid_seal_reason(reason: object) -> bool:
    return isinstance(reason, str) and _SEAL_REASON_RE.fullmatch(reason) is not None


def seal_text(origin: str, size: int, root: bytes, reason: str, dropped: int | dict[str, int] | None) -> bytes:
    """What a ``session.sealed`` line's signatures cover (SPEC 4.3): the checkpoint
    text for its size, then the extension line ``ledger-seal <reason> <D>``, D the
    total drop count. Raises ValueError for a reason SPEC does not allow."""
    return checkpoint_text(origin, size, root) + seal_extension(reason, dropped)


def seal_extension(reason: str, dropped: int | dict[str, int] | None) -> bytes:
    """The seal text's extension line: ``ledger-seal <reason> <D>`` LF."""
    if not valid_seal_reason(reason):
        raise ValueError(f"seal reason {reason!r} does not match [a-z][a-z_]{{0,31}}")
    return b"ledger-seal %s %d\n" % (reason.encode("ascii"), dropped_total(dropped))


def signed_text(origin: str, cp: Checkpoint, root: bytes) -> bytes:
    """The text a checkpoint or seal line's signatures are over: a seal signs its seal
    text, never the plain checkpoint text (which a checkpoint of the same size signs)."""
    if isinstance(cp, Sealed):
        return seal_text(origin, cp.size, root, cp.reason, cp.dropped)
    return checkpoint_text(origin, cp.size, root)


def hmac_sig(key: bytes, text: bytes) -> Sig:
    from .keys import key_id

    mac = hmac.new(key, text, hashlib.sha256).digest()
    return Sig(alg="hmac-sha256", key=key_id(key), sig=base64.b64encode(mac).decode("ascii"))


def hmac_matches(key: bytes, text: bytes, sig_b64: str) -> bool:
    """Constant-time check of one base64 HMAC-SHA256 signature."""
    try:
        found = base64.b64decode(sig_b64, validate=True)
    except (ValueError, TypeError):
        return False
    expected = hmac.new(key, text, hashlib.sha256).digest()
    return hmac.compare_digest(expected, found)


def build_checkpoint(
    origin: str,
    size: int,
    root: bytes,
    chain: bytes,
    keys: list[bytes],
    signers: list = (),
    now: float | None = None,
    seal: tuple[str, int | dict[str, int]] | None = None,
    **extra: object,
) -> dict:
    """data for a checkpoint or seal line at seq ``size``.

    ``keys`` sign with HMAC-SHA256; each of ``signers`` is a callable
    ``(text, now) -> {"alg", "key", "sig"}`` (Ed25519 notes, the forward-secure ratchet).
    ``seal`` = (reason, dropped) makes it a seal's data: every signature is then over
    the seal text, and ``reason`` and ``dropped`` are added.
    """
    text = checkpoint_text(origin, size, root) if seal is None else seal_text(origin, size, root, *seal)
    sigs = [msgspec.structs.asdict(hmac_sig(k, text)) for k in keys]
    when = time.time() if now is None else now
    sigs += [sign(text, when) for sign in signers]
    data = {"size": size, "root": root.hex(), "chain": chain.hex(), "sigs": sigs, **extra}
    if seal is not None:
        data["reason"], data["dropped"] = seal
    return data
