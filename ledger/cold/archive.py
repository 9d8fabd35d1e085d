"""Archive sealed sessions and captures to a cold store; delete locally only once proven there.

One session's path, each step safe to crash after (SPEC.md section 8):

1. read the sealed session once, feeding the verifier (with the HMAC key), a SHA-256
   and a gzip writer from the same bytes (so the gzip is of exactly the bytes that
   verified); a session that does not verify is never archived;
2. build the manifest (derived from the session alone: same bytes every time),
   sign it, and get an RFC 3161 token over it when a TSA is configured;
3. upload gzip, ``.sha256``, ``.tsr`` and, last, the manifest, each with its
   checksum and ``If-None-Match: *``; an identical object already there counts
   as uploaded, a different one is a conflict;
4. HEAD-confirm every object (size and sha256);
5. record ``archive.batch`` through the host's writer and wait until it is durable;
6. once the session is older than the hot retention window: redo 1-4 from the local
   bytes (re-uploading whatever the store lost), record ``archive.local_deleted``,
   flush, and only then unlink.

Nothing here decides from local bookkeeping alone: the LMDB batch view, the writer's
seal records and ``.last-seal.json`` can be edited by whoever owns the disk, so the
view only says which sessions look done; what is deleted is decided from bytes
verified in this pass, and the keys HEADed are derived from the session itself.
Before anything is uploaded, the namespace is claimed in the store for this root
(``<ns>/owner.json``, conditional write); a namespace another root owns is refused.

Temporary files live in ``<ns>/.outbox`` and are always rebuilt from the sealed
session, never reused, so a gzip half-written by a crash is never uploaded. A
rerun redoes 1-4 for any session the view does not show as archived, or whose objects
the store no longer has; uploads are idempotent: nothing is lost and nothing is
duplicated.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from .. import events as ev
from .. import layout
from ..errors import ArchiveError, EvidenceError, LedgerError, SessionInvalid, failure_text
from ..files import replace_atomic, sha256_file
from ..identity import root_identity
from ..keys import key_id
from ..projections import BatchView, CaptureView, Projector
from ..reader import decode_line, session_paths
from ..verify import Policy, verify_file, verify_stream
from .manifest import (
    Manifest,
    ManifestError,
    capture_keys,
    encode_manifest,
    parse_manifest,
    session_keys,
    sha256_sidecar,
)
from .owner import NamespaceOwned, claim_namespace
from .stores import Store, StoreUnavailable

# The deterministic gzip and the hashing streams an archive pass reads and writes
# through, split out and re-exported (cold.remote imports HashingReader from here).
from .streams import GZIP_LEVEL as GZIP_LEVEL
from .streams import GZIP_MEMBER as GZIP_MEMBER
from .streams import HashingReader as HashingReader
from .streams import _HashingWriter, _MemberGzip, _read_all, _Tee
from .streams import deterministic_gzip as deterministic_gzip
from .tsa import TsaError, request_token

log = logging.getLogger("ledger.cold")

OUTBOX = layout.OUTBOX_DIR
CHECKPOINT_UPLOADS = 8  # concurrent checkpoint PUTs: each is tiny, latency-bound
READ_BLOCK = 1 << 20
# How often one archiver re-HEADs the objects of sessions it keeps within hot retention.
PRESENCE_RECHECK_S = 3600.0


@dataclass
class PassReport:
    batches: list[ev.ArchiveBatch] = field(default_factory=list)
    local_deleted: list[ev.ArchiveLocalDeleted] = field(default_factory=list)
    captures: list[ev.CaptureOffloaded] = field(default_factory=list)
    reuploaded: list[str] = field(default_factory=list)  # archived sessions the store had lost
    skipped: int = 0  # sessions archived (now or before) and still within hot retention
    checkpoints: int = 0  # signed checkpoints written to <ns>/checkpoints/
    errors: list[str] = field(default_factory=list)  # every failure, evidence ones included
    evidence: list[str] = field(default_factory=list)  # the failures that are evidence problems


class Recorder:
    """What the archiver needs of a writer: record an event and make it durable."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger

    def record(self, event: msgspec.Struct) -> None:
        if not self.ledger.record(ev.kind_of(event), event):
            raise ArchiveError(f"the writer dropped {ev.kind_of(event)}; not going further")
        if not self.ledger.flush(timeout=60):
            raise ArchiveError(f"{ev.kind_of(event)} is not durable (writer failed); not going further")

    def current_session(self) -> str | None:
        return self.ledger.current_session


class Archiver:
    def __init__(
        self,
        root: str | os.PathLike[str],
        namespace: str,
        store: Store,
        ledger,
        keys: list[bytes],
        *,
        hot_retention_s: float = 0.0,
        tsa_url: str | None = None,
        clock: Callable[[], float] = time.time,
        jobs: int = 1,
        identity: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.namespace = namespace
        self.ns_dir = layout.namespace_dir(self.root, namespace)
        self.store = store
        self.recorder = Recorder(ledger)
        self.ledger = ledger
        self.keys = list(keys)
        self.hot_retention_s = hot_retention_s
        self.tsa_url = tsa_url
        self.clock = clock
        # 1 (a host process: never fork) verifies and gzips in one read; otherwise (the
        # CLI) the verifier's worker processes read the file while a thread gzips it.
        self.jobs = jobs
        # Who this root is in the store's owner objects: host_id, or the root's own id.
        self.identity = identity or root_identity(self.root)
        self._claimed = False
        self._verified: dict[str, int] = {}  # session -> bytes that verified in this archiver
        self._present_at: dict[str, float] = {}  # session -> when its objects were last seen in the store
        self.outbox = layout.outbox_dir(self.ns_dir)
        self.outbox.mkdir(mode=0o700, exist_ok=True)
        # A rebuild of the views (catch_up does one when history changed) must see the
        # sessions already archived and deleted here, or it would drop their batches.
        from .remote import archived_lines

        self.projector = Projector(self.root, namespace, archived_sessions=lambda: archived_lines(store, namespace))

    def close(self) -> None:
        self.projector.close()

    # ---- one pass --------------------------------------------------------------------

    def claim(self) -> None:
        """Claim the namespace in the store for this root, once per archiver; raises
        NamespaceOwned when another root owns it (nothing has been uploaded then)."""
        if not self._claimed:
            claim_namespace(self.store, self.namespace, self.identity)
            self._claimed = True

    def run_once(self) -> PassReport:
        """Archive every sealed session and capture not yet archived; delete what is due.

        Raises StoreUnavailable (the caller backs off and retries) and NamespaceOwned;
        other failures of one item are reported in ``errors`` (evidence problems also
        in ``evidence``) and the pass goes on.
        """
        report = PassReport()
        self.claim()
        self._sync()
        # Checkpoints first: a session's checkpoints leave the box before the session may
        # be deleted locally.
        report.checkpoints = self.upload_checkpoints(report.errors, report.evidence)
        current = self.recorder.current_session()
        for path in session_paths(self.ns_dir):
            if path.stem == current:
                continue
            try:
                self._one_session(path, report)
            except (StoreUnavailable, TsaError, NamespaceOwned):
                raise
            except LedgerError as exc:
                log.error("archive of %s failed: %s", path, exc)
                line = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
                report.errors.append(line)
                if isinstance(exc, EvidenceError):
                    report.evidence.append(line)
        for view in self.projector.captures():
            if view.local and (view.state == "local" or self._capture_lost(view)):
                try:
                    report.captures.append(self.offload_capture(view))
                except StoreUnavailable:
                    raise
                except LedgerError as exc:
                    log.error("offload of capture %s failed: %s", view.capture_id, exc)
                    report.errors.append(f"capture {view.capture_id}: {exc}")
                    if isinstance(exc, EvidenceError):
                        report.evidence.append(f"capture {view.capture_id}: {exc}")
        return report

    def _one_session(self, path: Path, report: PassReport) -> None:
        """Archive, re-upload or delete one sealed session, deciding from its verified bytes.

        The batch view only spares work: a session it shows as archived, not yet due and
        whose derived keys are all in the store is left alone. Anything that uploads or
        deletes first verifies the session with the key and derives every object from
        those bytes (step 1-4), so a wrong view, a forged seal record or a store that lost
        objects can neither delete an unarchived session nor launder a forgery.
        """
        session = path.stem
        batch = self.projector.batch_for_session(session)
        if batch is not None:
            # Recorded by a run that crashed before cleaning up its temporary gzip.
            layout.outbox_gz_path(self.ns_dir, session).unlink(missing_ok=True)
        try:
            due = self._due(_last_ts(path), batch)
        except (OSError, ValueError, msgspec.DecodeError):
            due = True  # unreadable seal time: take the full path, whose verification says why
        if batch is not None and not due and self._still_present(session, batch):
            report.skipped += 1
            return
        shipped, created = self.ship_session(path)
        if batch is None:
            self.recorder.record(shipped)
            report.batches.append(shipped)
        elif created or not _same_batch(batch, shipped):
            # The store had lost objects, or the view disagreed with the store: record
            # what is there now, from this pass's verified bytes.
            log.warning("%s: re-uploaded to %s (the store or the view had lost it)", session, self.store.url)
            self.recorder.record(shipped)
            report.reuploaded.append(session)
        if self._due(shipped.sealed_at, batch):
            report.local_deleted.append(self.delete_local(path, shipped, confirm=False))
        else:
            report.skipped += 1

    def _sync(self) -> None:
        self.ledger.flush(timeout=60)
        self.projector.catch_up()

    def _due(self, sealed_at: str, batch: BatchView | None) -> bool:
        """Older than the hot retention window. A session an operator restored stays
        until they delete it: it was brought back on purpose (keeping is the safe side
        of trusting the view)."""
        if batch is not None and batch.restored_at:
            return False
        t = datetime.strptime(sealed_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        return self.clock() - t >= self.hot_retention_s

    def _still_present(self, session: str, batch: BatchView) -> bool:
        """_all_present, asked at most once per PRESENCE_RECHECK_S for a session by one
        archiver (a host's worker runs a pass a minute; on file:// a HEAD hashes the
        object). Every `ledger archive` run asks afresh; a deletion always re-verifies."""
        now = time.monotonic()
        last = self._present_at.get(session)
        if last is not None and now - last < PRESENCE_RECHECK_S:
            return True
        if not self._all_present(session, batch):
            self._present_at.pop(session, None)
            return False
        self._present_at[session] = now
        return True

    def _all_present(self, session: str, batch: BatchView) -> bool:
        """Every key derived from the session (SPEC.md 8) is in the store with the size
        and sha256 the view recorded: a cheap check that decides only whether to redo
        steps 1-4, never a deletion."""
        keys = session_keys(self.namespace, session)
        recorded = {o.key: o for o in batch.objects}
        for key in (keys.gz, keys.sha256, keys.manifest) + ((keys.tsr,) if self.tsa_url else ()):
            info = self.store.head(key)
            obj = recorded.get(key)
            if info is None or obj is None or info.size != obj.bytes:
                return False
            if info.sha256 is not None and info.sha256 != obj.sha256:
                return False
        return True

    # ---- sessions ----------------------------------------------------------------------

    def archive_session(self, path: Path) -> ev.ArchiveBatch:
        """Steps 1 to 5 for one sealed session; returns the recorded batch event."""
        batch, _ = self.ship_session(path)
        self.recorder.record(batch)
        return batch

    def ship_session(self, path: Path) -> tuple[ev.ArchiveBatch, bool]:
        """Steps 1 to 4: verify with the key, upload what is missing, HEAD-confirm every
        key derived from the session against the local bytes. Returns the batch event
        (not recorded) and whether any object had to be uploaded."""
        session = path.stem
        keys = session_keys(self.namespace, session)
        gz_path = layout.outbox_gz_path(self.ns_dir, session)
        built = self._verify_and_gzip(path, gz_path)
        report = built.report
        if not report.ok or not report.sealed:
            gz_path.unlink(missing_ok=True)
            err = report.first_error
            if err is not None and err.line:
                why = failure_text(err.line, err.reason, err.detail)
            else:  # the message has always given the reason alone here
                why = (err.reason if err else "") or "not sealed"
            raise SessionInvalid(f"{path} does not verify ({why}); not archived, left in place", path=str(path))
        manifest = Manifest(
            namespace=self.namespace,
            session=session,
            first_seq=0,
            last_seq=report.events - 1,
            events=report.events,
            root=report.root,
            chain=report.chain,
            prev=report.prev,
            session_bytes=built.raw_bytes,
            session_sha256=built.raw_sha256,
            gz_bytes=built.gz_bytes,
            gz_sha256=built.gz_sha256,
            key_id=key_id(self.keys[0]),
            created=built.sealed_at,
        )
        gz_sha, gz_size, created = self._put_gzip(keys.gz, gz_path, manifest)
        if (gz_sha, gz_size) != (manifest.gz_sha256, manifest.gz_bytes):
            manifest = msgspec.structs.replace(manifest, gz_sha256=gz_sha, gz_bytes=gz_size)
        manifest_bytes = self._manifest_bytes(keys.manifest, manifest)
        uploads: list[tuple[str, bytes | Path, str]] = [
            (keys.sha256, sha256_sidecar(gz_sha, keys.gz.rsplit("/", 1)[1]), "text/plain"),
        ]
        if self.tsa_url:
            uploads.append((keys.tsr, self._timestamp(keys.tsr, manifest_bytes), "application/timestamp-reply"))
        uploads.append((keys.manifest, manifest_bytes, "application/json"))
        objects = [ev.StoredObject(key=keys.gz, bytes=gz_size, sha256=gz_sha)]
        for key, body, ctype in uploads:
            sha = hashlib.sha256(body).hexdigest()
            created |= self.store.put(key, body, sha256=sha, content_type=ctype).created
            objects.append(ev.StoredObject(key=key, bytes=len(body), sha256=sha))
        self._confirm(objects)
        batch = ev.ArchiveBatch(
            batch_id=session,
            store=self.store.url,
            session=session,
            first_seq=0,
            last_seq=report.events - 1,
            events=report.events,
            root=report.root,
            chain=report.chain,
            sealed_at=built.sealed_at,
            manifest_key=keys.manifest,
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            objects=objects,
        )
        gz_path.unlink(missing_ok=True)
        self._verified[session] = built.raw_bytes
        log.info("archived %s: %d events, %d -> %d bytes", session, report.events, built.raw_bytes, gz_size)
        return batch, created

    def _manifest_bytes(self, key: str, manifest: Manifest) -> bytes:
        """The manifest to store: ours, or the one already stored when its MAC verifies
        with one of our keys and it describes exactly these bytes (signed by a key that
        has since been rotated out of first place): re-shipping a session must not
        conflict with its own earlier archive."""
        ours = encode_manifest(manifest, self.keys[0])
        info = self.store.head(key)
        if info is None or (info.size, info.sha256) == (len(ours), hashlib.sha256(ours).hexdigest()):
            return ours
        with self.store.open(key) as f:
            stored = f.read(1 << 16)
        try:
            found = parse_manifest(stored, self.keys, key)
        except ManifestError:
            return ours  # not ours: the upload reports the conflict
        if msgspec.structs.replace(found, key_id=manifest.key_id) == manifest:
            return stored
        return ours

    def _verify_and_gzip(self, path: Path, gz_path: Path) -> _Built:
        """Verify the session and write its deterministic gzip, hashing both forms.

        With jobs == 1, one read feeds the verifier (this thread) and a compressor
        thread; otherwise verify_file's worker processes read the file while a thread
        reads, hashes and gzips it. zlib and hashlib release the GIL on large blocks, so
        compressing runs beside verifying, not after it.
        """
        tmp = layout.tmp_path(gz_path)
        tmp.unlink(missing_ok=True)
        try:
            return self._verify_and_gzip_to(path, tmp, gz_path)
        except OSError as exc:
            # A full or failing disk: leave no half-written gzip behind, and name the file.
            tmp.unlink(missing_ok=True)
            raise ArchiveError(f"cannot write {tmp}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _verify_and_gzip_to(self, path: Path, tmp: Path, gz_path: Path) -> _Built:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        policy = Policy(keys=tuple(self.keys), jobs=self.jobs)
        with open(fd, "wb") as raw_out:
            gz_out = _HashingWriter(raw_out)
            # Fixed members, mtime 0, no name: the same session always gives the same bytes.
            with open(path, "rb") as src, _MemberGzip(gz_out) as gz:
                tee = _Tee(src, gz)
                try:
                    if self.jobs == 1:
                        report = verify_stream(tee, str(path), policy)
                    else:
                        reader = threading.Thread(target=_read_all, args=(tee,), name="ledger-gzip-read")
                        reader.start()
                        try:
                            report = verify_file(path, policy)
                        finally:
                            reader.join()
                    while tee.read(READ_BLOCK):  # the rest, should the verifier stop early
                        pass
                finally:
                    tee.close()
            raw_out.flush()
            os.fsync(raw_out.fileno())
        os.replace(tmp, gz_path)
        return _Built(
            report=report,
            raw_bytes=tee.count,
            raw_sha256=tee.sha.hexdigest(),
            gz_bytes=gz_out.count,
            gz_sha256=gz_out.sha.hexdigest(),
            sealed_at=_last_ts(path),
        )

    def _put_gzip(self, key: str, gz_path: Path, manifest: Manifest) -> tuple[str, int, bool]:
        """Upload the gzip; adopt an existing remote gzip only if it decompresses to this
        session. Returns its sha256, size and whether it was uploaded now."""
        from .stores import ObjectConflict

        try:
            put = self.store.put(key, gz_path, sha256=manifest.gz_sha256, content_type="application/gzip")
            return manifest.gz_sha256, manifest.gz_bytes, put.created
        except ObjectConflict:
            # A crashed run on another zlib may have left different (valid) gzip bytes.
            info = self.store.head(key)
            with self.store.open(key) as f:
                tee = HashingReader(gzip.GzipFile(fileobj=f))
                while tee.read(READ_BLOCK):
                    pass
            if tee.sha.hexdigest() != manifest.session_sha256 or info is None or info.sha256 is None:
                raise
            log.warning("%s: adopting the gzip already in the store (same session bytes)", key)
            return info.sha256, info.size, False

    def _timestamp(self, key: str, manifest_bytes: bytes) -> bytes:
        """A token over the manifest: the one an earlier (crashed) run stored, or a new one."""
        from .tsa import TimestampInvalid, verify_token

        if self.store.head(key) is not None:
            with self.store.open(key) as f:
                existing = f.read(1 << 20)
            try:
                verify_token(existing, manifest_bytes, None)
                return existing  # same deterministic manifest: keep it, and record it
            except TimestampInvalid as exc:
                raise ArchiveError(f"{key}: a token over another manifest is already stored ({exc})") from None
        return request_token(self.tsa_url, manifest_bytes)

    def _confirm(self, objects: list[ev.StoredObject]) -> None:
        for obj in objects:
            info = self.store.head(obj.key)
            if info is None:
                raise ArchiveError(f"{obj.key}: not in the store after upload")
            if info.size != obj.bytes or (info.sha256 is not None and info.sha256 != obj.sha256):
                raise ArchiveError(
                    f"{obj.key}: store has {info.size} bytes sha256 {info.sha256}, expected {obj.bytes} {obj.sha256}"
                )

    def delete_local(
        self, path: Path, batch: BatchView | ev.ArchiveBatch, confirm: bool = True
    ) -> ev.ArchiveLocalDeleted:
        """Step 6: record, then unlink. ``batch`` must come from ship_session in this pass
        (its objects derived from the verified bytes and HEAD-confirmed), or be confirmed
        again here; the file must still be the one that verified."""
        if confirm:
            self._confirm(batch.objects)
        size = path.stat().st_size
        verified = self._verified.get(path.stem)
        if verified is not None and verified != size:
            raise ArchiveError(f"{path} changed since it was verified ({verified} -> {size} bytes); not deleted")
        event = ev.ArchiveLocalDeleted(batch_id=batch.batch_id, session=batch.session, path=str(path), bytes=size)
        self.recorder.record(event)
        path.unlink()
        layout.seal_record_path(self.ns_dir, path.stem).unlink(missing_ok=True)
        log.info("deleted local %s (archived as %s)", path.name, batch.manifest_key)
        return event

    # ---- checkpoints off the box ---------------------------------------------------------

    def upload_checkpoints(self, errors: list[str], evidence: list[str] | None = None) -> int:
        """Ship every signed checkpoint not yet shipped, as a note to
        <ns>/checkpoints/<session>/<size>.checkpoint (a few uploads at a time).

        Resumes from a byte offset per session (``.outbox/checkpoints.json``). The same
        checkpoint always gives the same bytes, written with If-None-Match: a different
        note already under the key means someone rewrote history, and is reported loudly.
        A session's offset only moves once all its notes are stored.
        """
        from ..anchors import session_checkpoints
        from .manifest import checkpoint_key
        from .stores import ObjectConflict

        state_path = layout.checkpoint_offsets_path(self.ns_dir)
        try:
            state = msgspec.json.decode(state_path.read_bytes(), type=dict[str, int])
        except (FileNotFoundError, msgspec.DecodeError):
            state = {}

        def put(key: str, note: bytes) -> None:
            self.store.put(key, note, sha256=hashlib.sha256(note).hexdigest(), content_type="text/plain")

        sent = 0
        present = {}
        outage: StoreUnavailable | None = None
        with ThreadPoolExecutor(max_workers=CHECKPOINT_UPLOADS, thread_name_prefix="ledger-cp") as pool:
            for path in session_paths(self.ns_dir):
                offset = state.get(path.stem, 0)
                try:
                    found, new_offset = session_checkpoints(path, offset)
                    for size, note in found:
                        # A checkpoint forged without the key never leaves the box as ours.
                        if not _note_mac_ok(note, self.keys):
                            raise SessionInvalid(
                                f"{path}: the checkpoint at size {size} has no valid HMAC by this host's key; "
                                "its checkpoints are not shipped",
                                path=str(path),
                            )
                except (OSError, msgspec.DecodeError, ValueError) as exc:
                    errors.append(f"checkpoints of {path}: {exc}")
                    continue
                except SessionInvalid as exc:
                    errors.append(str(exc))
                    if evidence is not None:
                        evidence.append(str(exc))
                    present[path.stem] = offset
                    continue
                futures = {
                    pool.submit(put, checkpoint_key(self.namespace, path.stem, size), note): size
                    for size, note in found
                }
                complete = True
                for fut, size in futures.items():
                    try:
                        fut.result()
                        sent += 1
                    except ObjectConflict:
                        key = checkpoint_key(self.namespace, path.stem, size)
                        log.error("%s: a DIFFERENT checkpoint is already stored: history was rewritten", key)
                        errors.append(f"{key}: a different checkpoint is already stored")
                    except StoreUnavailable as exc:
                        complete = False
                        outage = exc
                present[path.stem] = new_offset if complete else offset
        replace_atomic(state_path, msgspec.json.encode(present))
        if outage is not None:
            raise outage  # the worker backs off; the offsets kept say what is left
        return sent

    # ---- captures ----------------------------------------------------------------------

    def _capture_lost(self, view: CaptureView) -> bool:
        """An offloaded capture still local whose derived key this store does not hold
        with the size and sha256 of its capture.sealed: offload_capture ships it again
        (from local bytes it checks first). Asked at most once per PRESENCE_RECHECK_S
        by one archiver, as for sessions."""
        if view.state != "offloaded":
            return False
        last = self._present_at.get(view.capture_id)
        if last is not None and time.monotonic() - last < PRESENCE_RECHECK_S:
            return False
        info = self.store.head(capture_keys(self.namespace, view.capture_id)[0])
        if info is not None and info.size == view.bytes and info.sha256 in (None, view.sha256):
            self._present_at[view.capture_id] = time.monotonic()
            return False
        log.warning("capture %s: not in %s as sealed; offloading it again", view.capture_id, self.store.url)
        return True

    def offload_capture(self, view: CaptureView) -> ev.CaptureOffloaded:
        path = Path(view.path)
        if not path.exists():
            raise ArchiveError(f"{path} is missing")
        size, sha = sha256_file(path)
        if sha != view.sha256 or size != view.bytes:
            raise EvidenceError(f"{path}: sha256/size differ from its capture.sealed event; not offloaded")
        key, sidecar = capture_keys(self.namespace, view.capture_id)
        self.store.put(key, path, sha256=sha, content_type="application/vnd.tcpdump.pcap")
        side = sha256_sidecar(sha, key.rsplit("/", 1)[1])
        self.store.put(sidecar, side, sha256=hashlib.sha256(side).hexdigest(), content_type="text/plain")
        self._confirm([ev.StoredObject(key=key, bytes=size, sha256=sha)])
        event = ev.CaptureOffloaded(
            capture_id=view.capture_id, store=self.store.url, key=key, bytes=size, sha256=sha, sidecar_key=sidecar
        )
        self.recorder.record(event)
        return event


# ---- the background worker ---------------------------------------------------------------


class OffloadWorker:
    """Runs archive passes in a daemon thread: on a schedule, when woken by a seal or a
    capture, and with exponential backoff plus jitter while the store is unavailable.
    Its queue is a flag, not data: passes read sealed files from disk, so memory stays
    flat through an outage of any length."""

    def __init__(
        self, archiver: Archiver, interval_s: float = 60.0, backoff_base_s: float = 1.0, backoff_max_s: float = 300.0
    ) -> None:
        self.archiver = archiver
        self.interval_s = interval_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.failures = 0
        self.last_report: PassReport | None = None
        self.passes = 0
        self._thread = threading.Thread(target=self._run, name="ledger-offload", daemon=True)

    def start(self) -> OffloadWorker:
        self._thread.start()
        return self

    def notify(self, *_args: object) -> None:
        """Something was sealed: run a pass soon. Cheap and non-blocking (writer-safe)."""
        self._wake.set()

    def stop(self, timeout: float | None = 30) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        self.archiver.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            delay = self.interval_s
            try:
                self.last_report = self.archiver.run_once()
                self.passes += 1
                self.failures = 0
            except (StoreUnavailable, TsaError) as exc:
                self.failures += 1
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(self.failures - 1, 30))
                delay *= random.uniform(0.5, 1.0)  # full jitter: a fleet must not retry in step
                if self.failures in (1, 2, 4, 8) or self.failures % 64 == 0:
                    log.warning("cold store unavailable (%s); attempt %d, next in %.1fs", exc, self.failures, delay)
            except Exception as exc:  # noqa: BLE001 - offload must never take the host down
                self.failures += 1
                delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** min(self.failures - 1, 30))
                log.error("offload pass failed: %s: %s", exc.__class__.__name__, exc)
            self._wake.wait(delay)
            self._wake.clear()


# ---- small helpers -------------------------------------------------------------------


def _note_mac_ok(note: bytes, keys: list[bytes]) -> bool:
    """The note (ledger.anchors.checkpoint_note) carries an HMAC-SHA256 by one of ``keys``
    over its text, and every HMAC line by one of them verifies (constant-time compare)."""
    split = note.rfind(b"\n\n")
    if split < 0:
        return False
    text, sig_lines = note[: split + 1], note[split + 2 :].decode("utf-8", "replace").splitlines()
    by_name = {f"hmac-{key_id(k)}": k for k in keys}
    good = False
    for line in sig_lines:
        parts = line.split(" ")
        if len(parts) != 3 or parts[1] not in by_name:
            continue  # another kind of signature, or a key this host does not hold
        try:
            payload = base64.b64decode(parts[2], validate=True)
        except ValueError:
            return False
        mac = hmac.new(by_name[parts[1]], text, hashlib.sha256).digest()
        if not hmac.compare_digest(payload[4:], mac):
            return False
        good = True
    return good


def _same_batch(view: BatchView, shipped: ev.ArchiveBatch) -> bool:
    """The view already records exactly what was just confirmed in the store."""
    return (view.manifest_sha256, view.root, view.chain, view.store, view.objects) == (
        shipped.manifest_sha256,
        shipped.root,
        shipped.chain,
        shipped.store,
        shipped.objects,
    )


@dataclass
class _Built:
    report: object
    raw_bytes: int
    raw_sha256: str
    gz_bytes: int
    gz_sha256: str
    sealed_at: str


def _last_ts(path: Path) -> str:
    """The ts of a file's last line (its seal)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 65536))
        tail = f.read()
    return decode_line(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]).ts


def from_config(config, ledger, keys: list[bytes]) -> OffloadWorker | None:
    """Start offload for a host, or return None (with one warning) when it is disabled or
    misconfigured: the host keeps running on local evidence only."""
    from ..config import Config
    from .stores import open_store

    assert isinstance(config, Config)
    cold = config.cold
    if not cold.store:
        log.warning("cold storage is disabled (no store configured): evidence stays on this host")
        return None
    try:
        store = open_store(cold.store, cold.s3)  # a StoreOptions, checked when the config loaded
    except LedgerError as exc:
        log.warning("cold storage is misconfigured (%s): evidence stays on this host", exc)
        return None
    archiver = Archiver(
        config.root,
        ledger.namespace,
        store,
        ledger,
        keys,
        hot_retention_s=cold.hot_retention_days * 86400,
        tsa_url=cold.tsa_url,
        identity=config.host_id,
    )
    worker = OffloadWorker(archiver, cold.interval_s, cold.backoff_base_s, cold.backoff_max_s)
    ledger.add_seal_listener(worker.notify)
    return worker.start()
