"""``<root>/<namespace>/.last-seal.json``: the writer's record of its last seal, with a MAC.

The record names the newest sealed session of a namespace (its ``prev`` summary,
SPEC.md section 3) so that the link survives the sealed file being archived and
deleted, and so that ``verify DIR`` can tell a newest session that went missing.
It sits beside the sessions with the same permissions, so it carries an
HMAC-SHA256 over its fields and the namespace with the writer's key (SPEC.md
section 7): rewriting it without the key is detected by any verifier holding it.

Pure: no I/O besides what callers pass in; imports format, keys and layout only.
ledger.hot re-exports it with the hot tier's other records; it stays a module of its
own because ``verify`` reads the record and must not import the writer's side.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import msgspec

from . import format as fmt
from .keys import key_id
from .layout import LAST_SEAL_FILE

FILE_NAME = LAST_SEAL_FILE


class LastSeal(msgspec.Struct, forbid_unknown_fields=True):
    """The summary of the last seal, the id of the key that MACed it, and the MAC (hex)."""

    session: str
    size: int
    root: fmt.HEX64
    chain: fmt.HEX64
    key: str
    mac: str

    def link(self) -> fmt.PrevLink:
        return fmt.PrevLink(session=self.session, size=self.size, root=self.root, chain=self.chain)


def mac_text(namespace: str, link: fmt.PrevLink) -> bytes:
    """What the MAC covers: a fixed label, the namespace, and every field of the link."""
    return b"ledger-last-seal v1\n%s\n%s\n%d\n%s\n%s\n" % (
        namespace.encode(),
        link.session.encode(),
        link.size,
        link.root.encode(),
        link.chain.encode(),
    )


def make(namespace: str, link: fmt.PrevLink, key: bytes) -> bytes:
    """The file's bytes for ``link``, MACed with ``key``."""
    mac = hmac.new(key, mac_text(namespace, link), hashlib.sha256).hexdigest()
    record = LastSeal(session=link.session, size=link.size, root=link.root, chain=link.chain, key=key_id(key), mac=mac)
    return msgspec.json.encode(record) + b"\n"


def parse(data: bytes) -> LastSeal:
    """Decode the file's bytes (structure only). Raises ValueError with a one-line reason."""
    try:
        return msgspec.json.decode(data, type=LastSeal)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a last-seal record: {exc}") from None


def authentic(namespace: str, record: LastSeal, keys: Sequence[bytes]) -> bool:
    """True when one of ``keys`` (matched by key id) MACs the record; compared in constant time."""
    text = mac_text(namespace, record.link())
    for key in keys:
        if key and key_id(key) == record.key:
            want = hmac.new(key, text, hashlib.sha256).hexdigest()
            if hmac.compare_digest(want.encode(), record.mac.encode("utf-8", "replace")):
                return True
    return False
