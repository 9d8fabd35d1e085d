"""What is done to the cold tier after archiving: verify it, restore from it, expire it.

* ``verify_store``: every archived session of a namespace (or all namespaces):
  manifest HMAC, gzip and session sha256 and sizes, the session itself (streamed
  through the verifier, never whole in memory), the ``.sha256`` sidecar, the
  ``.tsr`` token, and the ``prev`` links across sessions.
* ``restore_session``: download, verify, and write a session back to the hot tier.
* ``plan_rotation`` / ``rotate_remote``: the objects sealed before a cut-off, by
  exact keys (never by listing a prefix): candidates from the batch view, each
  confirmed by its manifest's MAC and seal time as stored now, plus the session's
  shipped checkpoint notes, minus what Object Lock keeps; a dry run shows the
  plan, a real run deletes it in DeleteObjects chunks of at most 1,000, one
  ``remote.deleted`` event per batch.
* ``tier_report``: where the hot tier ends and the cold tier begins, and whether
  they join without a gap.
"""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import events as ev
from ..capture_verify import CaptureCheck, check_bytes, missing, recorded_captures
from ..errors import EvidenceError, InputError, UsageError
from ..projections import BatchView, Projector
from ..reader import session_paths
from ..verify import FileReport, FirstError, Policy, VerifyReport, check_prev_links, verify_file, verify_stream
from ..when import parse_stored, parse_when, stored_ts
from .archive import HashingReader
from .manifest import ManifestError, capture_keys, checkpoint_key, parse_manifest, session_keys, sha256_sidecar
from .stores import ObjectNotFound, Store
from .tsa import TimestampInvalid, verify_token

MANIFEST_SUFFIX = ".manifest.json"


# ---- verify ------------------------------------------------------------------------------


def store_namespaces(store: Store) -> list[str]:
    """Namespaces present in a store: first key segments with a sessions/ folder."""
    seen = set()
    for info in store.list(""):
        parts = info.key.split("/")
        if len(parts) > 2 and parts[1] in ("sessions", "captures", "checkpoints"):
            seen.add(parts[0])
    return sorted(seen)


def archived_manifests(store: Store, namespace: str) -> list[str]:
    """Manifest keys of a namespace in session order (the key's last part is the session id)."""
    keys = [i.key for i in store.list(f"{namespace}/sessions/") if i.key.endswith(MANIFEST_SUFFIX)]
    return sorted(keys, key=lambda k: k.rsplit("/", 1)[-1])


def verify_store(
    store: Store,
    namespace: str | None,
    policy: Policy,
    tsa_ca_pem: bytes | None = None,
) -> VerifyReport:
    """Verify every archived session of ``namespace`` (all namespaces when None)."""
    namespaces = [namespace] if namespace else store_namespaces(store)
    files: list[FileReport] = []
    captures: list[CaptureCheck] = []
    for ns in namespaces:
        reports = [verify_archived(store, key, policy, tsa_ca_pem) for key in archived_manifests(store, ns)]
        check_prev_links(reports)
        files.extend(reports)
        captures += verify_store_captures(store, ns, reports)
    if not files:
        raise InputError(
            f"{store.url}: no archived sessions found" + (f" for namespace {namespace}" if namespace else "")
        )
    report = VerifyReport(files)
    report.captures = captures
    return report


def verify_store_captures(store: Store, namespace: str, reports: list[FileReport]) -> list[CaptureCheck]:
    """Every archived pcap of ``namespace`` against the capture.sealed event in the
    archived sessions just verified (``reports``); the ``.sha256`` sidecar is not read.

    A pcap their capture.offloaded events put in this store, and no remote.deleted
    took out, that is not there is ``missing_capture``. A pcap whose capture.sealed is
    in none of these sessions (recorded in a session still in the hot tier) is
    ``unrecorded``: the store alone cannot vouch for it.
    """
    sessions = [(r, _archived_session_lines(store, namespace, r)) for r in reports if r.session]
    recorded = recorded_captures(sessions)
    checks = list(recorded.changed)
    base = store.url.rstrip("/")
    stored = {
        i.key.rsplit("/", 1)[-1].removesuffix(".pcap"): i.key
        for i in store.list(f"{namespace}/captures/")
        if i.key.endswith(".pcap")
    }
    for cid, key in sorted(stored.items()):
        rec = recorded.captures.get(cid)
        if rec is None:
            why = "its capture.sealed is in none of the archived sessions verified: not checked"
            checks.append(CaptureCheck(capture_id=cid, where=f"{base}/{key}", verdict="unrecorded", detail=why))
            continue
        try:
            checks.append(check_bytes(rec, f"{base}/{key}", lambda key=key: store.open(key)))
        except ObjectNotFound:
            checks.append(missing(rec, f"{base}/{key}", f"{key} was listed but is gone"))
    for cid, rec in sorted(recorded.captures.items()):
        off = rec.offloaded
        if off is None or rec.remote_deleted or cid in stored or off.store.rstrip("/") != base:
            continue
        why = f"its capture.offloaded put it at {off.key} (no remote.deleted since), and it is not there"
        checks.append(missing(rec, f"{base}/{off.key}", why))
    return checks


def _archived_session_lines(store: Store, namespace: str, report: FileReport):
    return lambda: _gz_lines(store, session_keys(namespace, report.session).gz)


def _object_failure(path: str, reason: str, detail: str) -> FileReport:
    return FileReport(path=path, first_error=FirstError(None, None, reason, detail))


def verify_archived(store: Store, manifest_key: str, policy: Policy, tsa_ca_pem: bytes | None) -> FileReport:
    """One archived session, object by object, then line by line."""
    url = f"{store.url.rstrip('/')}/{manifest_key}"
    with store.open(manifest_key) as f:
        manifest_bytes = f.read(1 << 20)
    try:
        m = parse_manifest(manifest_bytes, policy.keys, name=manifest_key)
    except ManifestError as exc:
        return _object_failure(url, "bad_manifest", str(exc))
    keys = session_keys(m.namespace, m.session)
    gz_url = f"{store.url.rstrip('/')}/{keys.gz}"
    try:
        with store.open(keys.gz) as raw:
            counted = HashingReader(raw)
            plain = HashingReader(gzip.GzipFile(fileobj=counted))
            try:
                report = verify_stream(plain, gz_url, policy)
                while plain.read(1 << 20):  # hash whatever follows an early failure, too
                    pass
            except (OSError, EOFError, zlib.error) as exc:
                return _object_failure(gz_url, "bad_gzip", f"gzip does not decompress: {exc}")
    except ObjectNotFound:
        return _object_failure(gz_url, "missing_object", f"{keys.gz} is missing (its manifest is present)")
    problems = []
    if (counted.count, counted.sha.hexdigest()) != (m.gz_bytes, m.gz_sha256):
        problems.append(
            (
                "gz_mismatch",
                f"gzip is {counted.count} bytes sha256 {counted.sha.hexdigest()[:16]}.., manifest says {m.gz_bytes} {m.gz_sha256[:16]}..",
            )
        )
    if (plain.count, plain.sha.hexdigest()) != (m.session_bytes, m.session_sha256):
        problems.append(("session_mismatch", "decompressed session differs from the manifest's sha256/size"))
    if report.ok and (report.root, report.chain, report.events) != (m.root, m.chain, m.events):
        problems.append(("manifest_mismatch", "session root/chain/events differ from the manifest"))
    sidecar = store.head(keys.sha256)
    if sidecar is None:
        problems.append(("missing_sidecar", f"{keys.sha256} is missing"))
    else:
        with store.open(keys.sha256) as f:
            if f.read(4096) != sha256_sidecar(m.gz_sha256, keys.gz.rsplit("/", 1)[1]):
                problems.append(("bad_sidecar", f"{keys.sha256} does not match the gzip's sha256"))
    if store.head(keys.tsr) is not None:
        with store.open(keys.tsr) as f:
            tsr = f.read(1 << 20)
        try:
            report.notes.append(verify_token(tsr, manifest_bytes, tsa_ca_pem))  # says what was not checked
        except TimestampInvalid as exc:
            problems.append(("bad_timestamp", str(exc)))
    if problems and report.ok:
        reason, detail = problems[0]
        report.first_error = FirstError(None, None, reason, detail)
        report.sealed = False
    return report


# ---- restore -----------------------------------------------------------------------------


def restore_session(
    store: Store, namespace: str, session: str, to_root: Path, policy: Policy
) -> tuple[Path, FileReport]:
    """Download, verify, and write ``<to_root>/<namespace>/<session>.ndjson`` (0600)."""
    keys = session_keys(namespace, session)
    if store.head(keys.manifest) is None:
        raise InputError(f"{session}: not archived in {store.url} (no {keys.manifest})")
    report = verify_archived(store, keys.manifest, policy, None)
    if not report.ok:
        e = report.first_error
        raise EvidenceError(f"{session}: archived copy does not verify: {e.reason}: {e.detail}")
    dest_dir = to_root / namespace
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = dest_dir / f"{session}.ndjson"
    if dest.exists():
        raise InputError(f"{dest} already exists")
    tmp = dest.with_name(dest.name + ".restore.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as out, store.open(keys.gz) as raw, gzip.GzipFile(fileobj=raw) as gz:
            while block := gz.read(1 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except gzip.BadGzipFile as exc:
        _unlink_quietly(tmp)
        raise EvidenceError(f"{store.url}/{keys.gz}: {exc}") from exc
    except OSError as exc:
        # A full disk (or any failed write) leaves no partial file behind.
        _unlink_quietly(tmp)
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    check = verify_file(tmp, Policy(keys=policy.keys, jobs=1))
    if not check.ok or check.root != report.root:
        tmp.unlink()
        raise EvidenceError(f"{session}: restored bytes do not verify")
    os.replace(tmp, dest)
    return dest, check


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def archived_lines(store: Store, namespace: str) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(session, lines) of every archived session, streamed: for Projector.rebuild."""
    for key in archived_manifests(store, namespace):
        session = key.rsplit("/", 1)[-1][: -len(MANIFEST_SUFFIX)]
        yield session, _gz_lines(store, session_keys(namespace, session).gz)


def _gz_lines(store: Store, key: str) -> Iterator[bytes]:
    with store.open(key) as raw, gzip.GzipFile(fileobj=raw) as gz:
        carry = b""
        while block := gz.read(1 << 20):
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            yield from parts


# ---- remote retention ----------------------------------------------------------------------


# Codes of keys a rotation keeps besides the store's own (AccessDenied, ...): a manifest
# that fails its MAC or does not parse is an evidence problem; one that disagrees with
# the view, or is missing, means rotate cannot confirm what it would delete.
BAD_MANIFEST = "BadManifest"
UNVERIFIED = "Unverified"
LOCKED = "ObjectLocked"


@dataclass
class RotateStep:
    """One DeleteObjects round (the store chunks by 1,000) and the remote.deleted event
    that records it: one archived session, or up to 1,000 captures."""

    keys: list[str]  # to delete
    kept: list[dict[str, str]] = field(default_factory=list)  # locked or unconfirmed: never sent
    batch_ids: list[str] = field(default_factory=list)
    capture_ids: list[str] = field(default_factory=list)


@dataclass
class RotatePlan:
    """What a rotation deletes: a dry run prints it, a real run executes exactly it."""

    before: str  # the cut-off, in the stored ts form
    steps: list[RotateStep] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [k for step in self.steps for k in step.keys]

    @property
    def kept(self) -> list[dict[str, str]]:
        return [k for step in self.steps for k in step.kept]


@dataclass
class RotateReport:
    before: str
    batches: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    dry_run: bool = False

    @property
    def evidence_problem(self) -> bool:
        """A kept key's manifest failed verification (not merely a refused delete)."""
        return any(k.get("code") == BAD_MANIFEST for k in self.kept)


def cutoff_refusal(before: datetime, hot_retention_s: float, now: float | None = None) -> str | None:
    """Why ``before`` is too late to be a safe cut-off, or None.

    A cut-off in the future takes objects sealed after the run too (everything).
    One newer than now minus the hot retention deletes the remote copy of sessions
    the hot tier still keeps for that window: the cold tier exists to outlive the
    box, so it must keep at least as much as the box does.
    """
    now_dt = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    if before > now_dt:
        return f"{stored_ts(before)} is in the future: every archived object would match"
    newest = now_dt - timedelta(seconds=hot_retention_s)
    if before > newest:
        days = hot_retention_s / 86400
        return (
            f"{stored_ts(before)} is newer than the hot retention allows ({days:g} days: "
            f"nothing sealed after {stored_ts(newest)}); the cold copy must outlive the local one"
        )
    return None


def plan_rotation(
    projector: Projector,
    store: Store,
    before: datetime,
    keys: Sequence[bytes],
    now: float | None = None,
) -> RotatePlan:
    """The exact keys of everything archived to ``store`` that was sealed (sessions) or
    started (captures) strictly before ``before``; what cannot be confirmed, or Object
    Lock keeps, is moved to ``kept`` with the reason.

    The batch view names the candidates (never a listing of the store); each one is then
    decided from its manifest as stored now (``_session_step``). A session's shipped
    checkpoint notes are found by listing that one session's folder (their sizes are
    not in the view). A time that does not parse is never due: nothing is deleted on
    a guess.
    """
    if not keys:
        raise UsageError("rotating the cold tier needs the HMAC key(s): each manifest is verified first")
    plan = RotatePlan(before=stored_ts(before))
    namespace = projector.dir.name
    for batch in projector.batches():
        if batch.state == "remote-deleted" or batch.store != store.url or not _before(batch.sealed_at, before):
            continue
        plan.batches.append(batch.batch_id)
        plan.steps.append(_session_step(store, namespace, batch, before, keys))
    old_caps = [
        c
        for c in projector.captures()
        if c.state == "offloaded" and c.remote_key and c.store == store.url and _before(c.started_at, before)
    ]
    for start in range(0, len(old_caps), 1000):
        chunk = old_caps[start : start + 1000]
        plan.captures.extend(c.capture_id for c in chunk)
        step = RotateStep(keys=[], capture_ids=[c.capture_id for c in chunk])
        for c in chunk:
            # The keys SPEC 8 derives from the capture id (which starts with its start
            # time), and only if the view recorded the same: a wrong view points nowhere.
            derived = list(capture_keys(namespace, c.capture_id))
            if not _id_started_before(c.capture_id, before):
                step.kept += _unverified(
                    derived,
                    f"capture {c.capture_id}'s id does not start before the cut-off (the view says {c.started_at})",
                )
            elif c.remote_key == derived[0]:
                step.keys += derived
            else:
                step.kept += _unverified(
                    [c.remote_key], f"the view's key is not the one capture {c.capture_id} derives"
                )
        plan.steps.append(step)
    if plan.keys and store.object_lock_enabled():
        _hold_locked(store, plan, time.time() if now is None else now)
    return plan


def _id_started_before(capture_id: str, cutoff: datetime) -> bool:
    """The start second a capture id carries (``20261201T061038Z-c3b81b54``, SPEC 8), the
    whole second before ``cutoff``: the view's started_at alone never makes a capture due."""
    try:
        started = datetime.strptime(capture_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return False
    return started + timedelta(seconds=1) <= cutoff


def _session_step(
    store: Store, namespace: str, batch: BatchView, before: datetime, keys: Sequence[bytes]
) -> RotateStep:
    """One archived session's keys, decided from the bytes of its manifest, not the view alone.

    The manifest's MAC must verify with ``keys``, name this namespace and session, and
    its ``created`` (the seal time) must be before the cut-off. The keys are the ones
    SPEC 8 derives from the session that the view also recorded. So a wrong or forged
    view can neither make a fresh session due nor aim a delete at another session's
    objects; what cannot be confirmed is kept, named, and the run exits non-zero.
    """
    derived = session_keys(namespace, batch.session)
    recorded = {o.key for o in batch.objects} | {batch.manifest_key}
    wanted = [k for k in derived.all() if k in recorded]
    step = RotateStep(keys=wanted + _checkpoint_notes(store, namespace, batch.session), batch_ids=[batch.batch_id])
    try:
        with store.open(derived.manifest) as f:
            data = f.read(1 << 20)
    except ObjectNotFound:
        if batch.state == "partly-deleted" and derived.manifest not in batch.kept:
            # An earlier run verified this manifest, deleted it and recorded so; what
            # it could not delete then (named in the log) is finished now.
            return step
        return _hold(step, f"{derived.manifest} is missing: what the batch holds cannot be confirmed")
    try:
        m = parse_manifest(data, keys, name=derived.manifest)
    except ManifestError as exc:  # the stored evidence itself fails: tamper or corruption
        return _hold(step, str(exc), code=BAD_MANIFEST)
    if (m.namespace, m.session) != (namespace, batch.session):
        return _hold(step, f"{derived.manifest} describes {m.namespace}/{m.session}")
    if not _before(m.created, before):
        return _hold(step, f"its manifest says sealed at {m.created}, the batch view {batch.sealed_at}")
    return step


def _unverified(keys: list[str], message: str, code: str = UNVERIFIED) -> list[dict[str, str]]:
    return [{"key": k, "code": code, "message": message} for k in keys]


def _hold(step: RotateStep, message: str, code: str = UNVERIFIED) -> RotateStep:
    step.kept += _unverified(step.keys, message, code)
    step.keys = []
    return step


def _before(ts: str, cutoff: datetime) -> bool:
    when = parse_stored(ts)
    return when is not None and when < cutoff


def _checkpoint_notes(store: Store, namespace: str, session: str) -> list[str]:
    """``<ns>/checkpoints/<session>/<size>.checkpoint`` of one session, as stored."""
    folder = checkpoint_key(namespace, session, 0).rpartition("/")[0] + "/"
    return [i.key for i in store.list(folder) if _NOTE_NAME.match(i.key[len(folder) :])]


_NOTE_NAME = re.compile(r"^[0-9]+\.checkpoint$")


def _hold_locked(store: Store, plan: RotatePlan, now: float) -> None:
    """Move keys under an unexpired Object Lock retention out of the deletions.

    Asked by HEAD before deleting: without versioned deletes, S3 answers a DELETE of a
    locked object with success and a delete marker, which keeps the bytes but hides
    them from ``ledger verify`` and would have the view call them deleted.
    """
    for step in plan.steps:
        free = []
        for key in step.keys:
            info = store.head(key)
            if info is not None and info.lock_mode and info.retain_until is not None and info.retain_until > now:
                until = stored_ts(datetime.fromtimestamp(info.retain_until, UTC))
                step.kept.append({"key": key, "code": LOCKED, "message": f"{info.lock_mode} until {until}"})
            else:
                free.append(key)
        step.keys = free


def rotate_remote(
    projector: Projector,
    store: Store,
    recorder,
    before: str | datetime,
    dry_run: bool = False,
    now: float | None = None,
    *,
    keys: Sequence[bytes],
) -> RotateReport:
    """Delete archived objects sealed before ``before`` (ledger/when.py grammar or an
    aware datetime), by exact key: the steps of ``plan_rotation``, one remote.deleted
    event each. ``keys`` verify the manifests. A dry run returns the plan's keys as
    ``deleted`` and touches nothing."""
    cutoff = before if isinstance(before, datetime) else parse_when(before, now, option="before")
    plan = plan_rotation(projector, store, cutoff, keys, now)
    report = RotateReport(before=plan.before, batches=plan.batches, captures=plan.captures, dry_run=dry_run)
    if dry_run:
        report.deleted, report.kept = plan.keys, plan.kept
        return report
    for step in plan.steps:
        result = store.delete_many(step.keys)  # an empty step sends nothing, and is still recorded
        report.requests += getattr(result, "requests", 0)
        report.deleted.extend(result.deleted)
        kept = step.kept + result.errors
        report.kept.extend(kept)
        recorder.record(
            ev.RemoteDeleted(
                store=store.url,
                before=plan.before,
                batch_ids=step.batch_ids,
                capture_ids=step.capture_ids,
                deleted=result.deleted,
                kept=kept,
            )
        )
    return report


# ---- tiers ----------------------------------------------------------------------------------


@dataclass
class TierReport:
    namespace: str
    oldest_hot: str | None
    newest_archived: str | None
    joined: bool
    detail: str


def tier_report(root: Path, namespace: str, store: Store) -> TierReport:
    """The tier boundary, and whether the oldest hot session links to an archived one (or is first)."""
    hot = session_paths(root / namespace)
    archived = [k.rsplit("/", 1)[-1][: -len(MANIFEST_SUFFIX)] for k in archived_manifests(store, namespace)]
    oldest_hot = hot[0].stem if hot else None
    newest_archived = archived[-1] if archived else None
    if not hot:
        return TierReport(namespace, None, newest_archived, True, "no hot sessions: everything is in the cold tier")
    first = verify_file(hot[0], Policy(allow_unsealed=True, jobs=1))
    prev = first.prev
    if prev is None:
        return TierReport(
            namespace, oldest_hot, newest_archived, True, "the oldest hot session is the namespace's first"
        )
    if prev.session in {p.stem for p in hot} or prev.session in archived:
        where = "archived" if prev.session in archived else "hot"
        return TierReport(namespace, oldest_hot, newest_archived, True, f"{oldest_hot} links to {where} {prev.session}")
    return TierReport(
        namespace,
        oldest_hot,
        newest_archived,
        False,
        f"gap: {oldest_hot} links to {prev.session}, which is in neither tier",
    )
