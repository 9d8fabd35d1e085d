"""The fold: one small function per event kind, each changing the views it concerns."""

from __future__ import annotations

from collections.abc import Callable

from .. import events as ev
from .views import BatchView, _Txn


def _capture_started(t: _Txn, d: ev.CaptureStarted, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.cn, v.ip, v.reason, v.anomaly_id, v.path = d.cn, d.ip, d.reason, d.anomaly_id, d.path
    v.session, v.seq, v.state = session, seq, "capturing"
    t.put_capture(v)


def _capture_sealed(t: _Txn, d: ev.CaptureSealed, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.cn, v.ip, v.reason, v.anomaly_id, v.path = d.cn, d.ip, d.reason, d.anomaly_id, d.path
    v.bytes, v.sha256, v.started_at, v.duration_ms = d.bytes, d.sha256, d.started_at, d.duration_ms
    v.local = True
    if v.state in ("capturing", "failed"):
        v.state = "local"
    if not v.session:
        v.session, v.seq = session, seq
    t.put_capture(v)


def _capture_failed(t: _Txn, d: ev.CaptureFailed, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.cn, v.ip, v.reason, v.anomaly_id = d.cn, d.ip, d.reason, d.anomaly_id
    v.state, v.cause, v.local = "failed", d.cause, False
    if not v.session:
        v.session, v.seq = session, seq
    t.put_capture(v)


def _capture_evicted(t: _Txn, d: ev.CaptureEvicted, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.local = False
    if v.state != "offloaded" and v.state != "remote-deleted":
        v.state = "evicted"
    t.put_capture(v)


def _capture_offloaded(t: _Txn, d: ev.CaptureOffloaded, session: str, seq: int) -> None:
    v = t.get_capture(d.capture_id)
    v.state, v.remote_key, v.store = "offloaded", d.key, d.store
    t.put_capture(v)


def _archive_batch(t: _Txn, d: ev.ArchiveBatch, session: str, seq: int) -> None:
    fields = {f: getattr(d, f) for f in d.__struct_fields__}
    t.put_batch(BatchView(**fields, recorded_in=session))


def _archive_local_deleted(t: _Txn, d: ev.ArchiveLocalDeleted, session: str, seq: int) -> None:
    b = t.get_batch(d.batch_id)
    if b is not None:
        b.local_deleted = True
        t.put_batch(b)


def _archive_restored(t: _Txn, d: ev.ArchiveRestored, session: str, seq: int) -> None:
    b = t.get_batch(d.batch_id)
    if b is not None:
        b.local_deleted = False
        b.restored_at = d.restored_at
        t.put_batch(b)


def _remote_deleted(t: _Txn, d: ev.RemoteDeleted, session: str, seq: int) -> None:
    kept = {k["key"] for k in d.kept}
    for bid in d.batch_ids:
        b = t.get_batch(bid)
        if b is None:
            continue
        b.kept = sorted(kept & {o.key for o in b.objects} | kept & {b.manifest_key})
        b.state = "partly-deleted" if b.kept else "remote-deleted"
        t.put_batch(b)
    for cid in d.capture_ids:
        v = t.get_capture(cid)
        if v.remote_key and v.remote_key not in kept:
            v.state = "remote-deleted"
            t.put_capture(v)


_FOLD: dict[str, Callable] = {
    "capture.started": _capture_started,
    "capture.sealed": _capture_sealed,
    "capture.failed": _capture_failed,
    "capture.evicted": _capture_evicted,
    "capture.offloaded": _capture_offloaded,
    "archive.batch": _archive_batch,
    "archive.local_deleted": _archive_local_deleted,
    "archive.restored": _archive_restored,
    "remote.deleted": _remote_deleted,
}
