"""Deterministic object keys and HMAC-signed manifests (SPEC.md section 8).

A manifest describes one archived session: what the session is (namespace, id,
seq range, root, chain head, prev link) and what was uploaded (sizes and sha256 of
the session and of its gzip). Its bytes are ``M[:-1] + ',"hmac":{"key":"<key id>",
"sig":"<base64>"}}' + LF`` where ``M`` is the compact manifest object and the MAC
is HMAC-SHA256(key, M): the same splice as a ledger line, so the signed bytes are
recovered exactly, never re-encoded. Every field is derived from the sealed
session (``created`` is its seal time), so building it twice gives the same bytes:
a re-run after a crash re-uploads identical objects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

from .. import format as fmt
from ..errors import ManifestError
from ..keys import key_id
from ..layout import SessionKeys, capture_keys, checkpoint_key, owner_key, session_keys

MANIFEST_VERSION = 1
_SIG_HEAD = b',"hmac":{"key":"'
_SIG_MID = b'","sig":"'
_SIG_TAIL = b'"}}\n'
SIG_SUFFIX_LEN = len(_SIG_HEAD) + 16 + len(_SIG_MID) + 44 + len(_SIG_TAIL)


class Manifest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    v: int = MANIFEST_VERSION
    namespace: str
    session: str
    first_seq: int
    last_seq: int
    events: int
    root: str
    chain: str
    prev: fmt.PrevLink | None
    session_bytes: int
    session_sha256: str
    gz_bytes: int
    gz_sha256: str
    key_id: str
    created: str


_decode = msgspec.json.Decoder(Manifest).decode


def encode_manifest(m: Manifest, key: bytes) -> bytes:
    body = msgspec.json.encode(m)
    mac = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest())
    return body[:-1] + _SIG_HEAD + key_id(key).encode() + _SIG_MID + mac + _SIG_TAIL


def parse_manifest(data: bytes, keys: list[bytes] | tuple[bytes, ...], name: str = "manifest") -> Manifest:
    """Check the MAC with a trusted key, then decode. Raises ManifestError."""
    n = len(data)
    if (
        n <= SIG_SUFFIX_LEN
        or not data.endswith(_SIG_TAIL)
        or data[n - SIG_SUFFIX_LEN : n - SIG_SUFFIX_LEN + len(_SIG_HEAD)] != _SIG_HEAD
    ):
        raise ManifestError(f"{name}: not a signed ledger manifest")
    tail = data[n - SIG_SUFFIX_LEN :]
    kid = tail[len(_SIG_HEAD) : len(_SIG_HEAD) + 16].decode("ascii", "replace")
    sig = tail[len(_SIG_HEAD) + 16 + len(_SIG_MID) : -len(_SIG_TAIL)]
    body = data[: n - SIG_SUFFIX_LEN] + b"}"
    if keys:
        key = next((k for k in keys if key_id(k) == kid), None)
        if key is None:
            raise ManifestError(f"{name}: signed by key {kid}, which is not trusted")
        try:
            found = base64.b64decode(sig, validate=True)
        except ValueError:
            raise ManifestError(f"{name}: signature is not base64") from None
        if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), found):
            raise ManifestError(f"{name}: HMAC does not verify (manifest altered)")
    try:
        return _decode(body)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"{name}: {exc}") from None


# ---- keys ----------------------------------------------------------------------------
# The key builders live in ledger.layout with every other name; re-exported here
# because the cold tier has always imported them from this module.


def sha256_sidecar(sha256_hex: str, filename: str) -> bytes:
    """The `sha256sum` line for a file, so `sha256sum -c` checks a download."""
    return f"{sha256_hex}  {filename}\n".encode()


__all__ = [
    "Manifest",
    "ManifestError",
    "SessionKeys",
    "capture_keys",
    "checkpoint_key",
    "encode_manifest",
    "owner_key",
    "parse_manifest",
    "session_keys",
    "sha256_sidecar",
]
