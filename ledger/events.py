"""The data of every event kind ledger itself writes: one msgspec Struct per kind.

Producers build these Structs (so a typo is a TypeError, not a silent field) and
hand them to ``Ledger.record``; readers (projections, tail summaries, the cold
tier) decode ``data`` with ``decode(kind, raw)``. New fields get defaults, so old
ledgers still decode (schema evolution without versions). Kinds the format itself
defines (session.opened, ledger.checkpoint, session.sealed) live in ``format``.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Event(msgspec.Struct, kw_only=True, omit_defaults=False):
    pass


# ---- captures (ledger.capture) -------------------------------------------------------


class CaptureStarted(_Event, kw_only=True):
    capture_id: str
    cn: str
    ip: str
    reason: str
    severity: str
    anomaly_id: str | None = None
    path: str
    interface: str
    duration_s: float
    snaplen: int


class CaptureSealed(_Event, kw_only=True):
    """The pointer: where the pcap is and what it must hash to. The pcap never enters the ledger."""

    capture_id: str
    cn: str
    ip: str
    reason: str
    anomaly_id: str | None = None
    path: str
    bytes: int
    sha256: str
    started_at: str
    duration_ms: int
    packets: int | None = None
    exit: str = ""
    # "empty": sealed with no packet. Default "ok" so pointers written before it decode.
    outcome: Literal["ok", "empty"] = "ok"


class CaptureFailed(_Event, kw_only=True):
    capture_id: str
    cn: str
    ip: str
    reason: str
    anomaly_id: str | None = None
    cause: str


class CaptureEvicted(_Event, kw_only=True):
    capture_id: str
    path: str
    bytes: int
    reason: Literal["max_files", "max_bytes"]
    offloaded: bool


class CaptureOffloaded(_Event, kw_only=True):
    capture_id: str
    store: str
    key: str
    bytes: int
    sha256: str
    sidecar_key: str


# ---- cold storage (ledger.cold) ------------------------------------------------------


class StoredObject(msgspec.Struct, kw_only=True):
    key: str
    bytes: int
    sha256: str


class ArchiveBatch(_Event, kw_only=True):
    """A sealed session now in the cold store, every object HEAD-confirmed."""

    batch_id: str
    store: str
    session: str
    first_seq: int
    last_seq: int
    events: int
    root: str
    chain: str
    sealed_at: str
    manifest_key: str
    manifest_sha256: str
    objects: list[StoredObject]


class ArchiveLocalDeleted(_Event, kw_only=True):
    batch_id: str
    session: str
    path: str
    bytes: int


class ArchiveRestored(_Event, kw_only=True):
    """An archived session written back to the hot tier (verified first)."""

    batch_id: str
    session: str
    path: str
    restored_at: str


class RemoteDeleted(_Event, kw_only=True):
    store: str
    before: str
    batch_ids: list[str]
    capture_ids: list[str] = []
    deleted: list[str]
    kept: list[dict[str, str]] = []


KINDS: dict[str, type[msgspec.Struct]] = {
    "capture.started": CaptureStarted,
    "capture.sealed": CaptureSealed,
    "capture.failed": CaptureFailed,
    "capture.evicted": CaptureEvicted,
    "capture.offloaded": CaptureOffloaded,
    "archive.batch": ArchiveBatch,
    "archive.local_deleted": ArchiveLocalDeleted,
    "archive.restored": ArchiveRestored,
    "remote.deleted": RemoteDeleted,
}
KIND_OF: dict[type[msgspec.Struct], str] = {v: k for k, v in KINDS.items()}
_decoders = {kind: msgspec.json.Decoder(t) for kind, t in KINDS.items()}


def kind_of(event: msgspec.Struct) -> str:
    return KIND_OF[type(event)]


def decode(kind: str, data: bytes) -> msgspec.Struct | None:
    """The typed data of a known kind; None for kinds ledger does not define.

    Raises msgspec.ValidationError when a known kind's data does not fit its schema.
    """
    dec = _decoders.get(kind)
    return dec.decode(data) if dec is not None else None
