"""The stored views: what a capture and an archive batch look like, the position, and
the write transaction the fold goes through (LMDB, one database per view, JSON values).
"""

from __future__ import annotations

from typing import Literal

import lmdb
import msgspec

from .. import events as ev

CaptureState = Literal["capturing", "local", "failed", "evicted", "offloaded", "remote-deleted"]


class CaptureView(msgspec.Struct, kw_only=True):
    capture_id: str
    cn: str = ""
    ip: str = ""
    reason: str = ""
    anomaly_id: str | None = None
    path: str = ""
    bytes: int = 0
    sha256: str = ""
    started_at: str = ""
    duration_ms: int = 0
    state: CaptureState = "capturing"
    local: bool = False  # the pcap is (supposed to be) on local disk
    remote_key: str | None = None
    store: str | None = None
    cause: str | None = None
    session: str = ""  # where the capture.started event is
    seq: int = 0


class BatchView(msgspec.Struct, kw_only=True):
    batch_id: str
    session: str
    store: str
    first_seq: int
    last_seq: int
    events: int
    root: str
    chain: str
    sealed_at: str
    manifest_key: str
    manifest_sha256: str
    objects: list[ev.StoredObject]
    state: Literal["archived", "remote-deleted", "partly-deleted"] = "archived"
    local_deleted: bool = False
    kept: list[str] = []
    recorded_in: str = ""  # session that holds the archive.batch event
    restored_at: str | None = None  # written back to the hot tier at this time


class Position(msgspec.Struct):
    session: str
    seq: int
    chain: str
    sealed: bool


_enc = msgspec.json.Encoder()
_cap_dec = msgspec.json.Decoder(CaptureView)
_batch_dec = msgspec.json.Decoder(BatchView)
_pos_dec = msgspec.json.Decoder(Position)


class _Txn:
    """The view databases inside one LMDB write transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, object]) -> None:
        self.txn = txn
        self.dbs = dbs

    def get_capture(self, cid: str) -> CaptureView:
        raw = self.txn.get(cid.encode(), db=self.dbs["captures"])
        return _cap_dec.decode(raw) if raw else CaptureView(capture_id=cid)

    def put_capture(self, view: CaptureView) -> None:
        self.txn.put(view.capture_id.encode(), _enc.encode(view), db=self.dbs["captures"])

    def get_batch(self, bid: str) -> BatchView | None:
        raw = self.txn.get(bid.encode(), db=self.dbs["batches"])
        return _batch_dec.decode(raw) if raw else None

    def put_batch(self, view: BatchView) -> None:
        self.txn.put(view.batch_id.encode(), _enc.encode(view), db=self.dbs["batches"])
        self.txn.put(view.session.encode(), view.batch_id.encode(), db=self.dbs["sessions"])
