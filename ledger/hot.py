"""The hot tier's records: what the writer keeps beside the sessions of a namespace.

* ``.seals/<session>.json``: one ``SealRecord`` per sealed session (its summary and
  the size and sha256 of its bytes), so the archiver can check a session against
  it instead of re-verifying (SPEC.md 7).
* ``.last-seal.json``: the MACed summary of the last seal; ``ledger.lastseal`` is
  its pure codec (re-exported here) because ``verify`` reads it too and must not
  carry the writer's I/O with it.
* ``.drops``: the writer's drop counts, a fixed-size MACed record rewritten in place.

The writer writes these and the cold tier reads them; both import this module, so
the cold tier never imports the writer (the inward dependency rule).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from . import format as fmt
from . import layout
from .files import replace_atomic
from .keys import key_id
from .lastseal import LastSeal
from .lastseal import authentic as last_seal_authentic
from .lastseal import make as make_last_seal
from .lastseal import parse as parse_last_seal

_encoder = msgspec.json.Encoder()

# ---- .seals/<session>.json -------------------------------------------------------------


class SealRecord(msgspec.Struct, forbid_unknown_fields=True):
    """``.seals/<session>.json``: a sealed session's summary (as in ``prev``) and the size and
    sha256 of its bytes. The archiver checks a session against this instead of
    re-verifying it (SPEC.md 7); a session without one is verified in full."""

    session: str
    size: int
    root: str
    chain: str
    bytes: int
    sha256: str


def read_seal_record(ns_dir: Path, session: str) -> SealRecord | None:
    """The seal record of ``session``, or None when there is none or it does not decode."""
    try:
        return msgspec.json.decode(layout.seal_record_path(ns_dir, session).read_bytes(), type=SealRecord)
    except (OSError, msgspec.DecodeError):
        return None


def write_seal_record(
    ns_dir: Path,
    link: fmt.PrevLink,
    size: int,
    sha256: str,
    replace: Callable[[Path, bytes], None] = replace_atomic,
) -> None:
    """Write the seal record of ``link.session`` atomically (``.seals/`` made 0700 if need be)."""
    layout.seals_dir(ns_dir).mkdir(mode=0o700, exist_ok=True)
    record = SealRecord(
        session=link.session, size=link.size, root=link.root, chain=link.chain, bytes=size, sha256=sha256
    )
    replace(layout.seal_record_path(ns_dir, link.session), msgspec.json.encode(record) + b"\n")


# ---- .drops ----------------------------------------------------------------------------

# Fixed size, so rewriting it in place (pwrite) never needs free space.
DROPS_BYTES = 512


class DropsRecord(msgspec.Struct, forbid_unknown_fields=True):
    """``.drops``: the session the counts belong to, the writer's counts so far, a MAC."""

    session: str
    dropped: dict[str, int]
    key: str
    mac: str


def drops_text(namespace: str, session: str, dropped: Mapping[str, int]) -> bytes:
    """What the MAC covers (SPEC.md 7): a label, the namespace, the session, the non-zero counts."""
    counts = ",".join(f"{k}={v}" for k, v in sorted(dropped.items()) if v)
    return f"ledger-drops v1\n{namespace}\n{session}\n{counts}\n".encode()


class DropsMac:
    """Builds ``.drops`` records for one namespace and key; the HMAC key schedule is done
    once, so a record costs about as much as the pwrite that stores it."""

    def __init__(self, namespace: str, key: bytes) -> None:
        self.namespace = namespace
        self.key_id = key_id(key)
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def record(self, session: str, dropped: Mapping[str, int]) -> bytes:
        """The fixed-size bytes of ``.drops`` (padded with spaces, LF last)."""
        counts = {k: v for k, v in dropped.items() if v}
        mac = self._mac.copy()
        mac.update(drops_text(self.namespace, session, counts))
        raw = _encoder.encode(DropsRecord(session=session, dropped=counts, key=self.key_id, mac=mac.hexdigest()))
        return raw.ljust(DROPS_BYTES - 1)[: DROPS_BYTES - 1] + b"\n"


def drops_record(namespace: str, session: str, dropped: Mapping[str, int], key: bytes) -> bytes:
    return DropsMac(namespace, key).record(session, dropped)


def parse_drops(raw: bytes) -> DropsRecord | None:
    """Decode ``.drops`` (structure only): None for an empty (just allocated) record.
    Raises ValueError when it does not decode."""
    if not raw.strip():
        return None
    try:
        return msgspec.json.decode(raw.strip(), type=DropsRecord)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a drops record: {exc}") from None


def drops_authentic(namespace: str, record: DropsRecord, keys: Sequence[bytes]) -> bool:
    """True when one of ``keys`` (matched by key id) MACs the record; compared in constant time."""
    text = drops_text(namespace, record.session, record.dropped)
    for key in keys:
        if key_id(key) == record.key:
            want = hmac.new(key, text, hashlib.sha256).hexdigest().encode()
            if hmac.compare_digest(want, record.mac.encode("utf-8", "replace")):
                return True
    return False


__all__ = [
    "DROPS_BYTES",
    "DropsMac",
    "DropsRecord",
    "LastSeal",
    "SealRecord",
    "drops_authentic",
    "drops_record",
    "drops_text",
    "last_seal_authentic",
    "make_last_seal",
    "parse_drops",
    "parse_last_seal",
    "read_seal_record",
    "write_seal_record",
]
