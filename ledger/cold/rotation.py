"""Expiring the cold tier: ``plan_rotation`` / ``rotate_remote``.

The objects sealed before a cut-off, by exact keys (never by listing a prefix):
candidates from the batch view, each confirmed by its manifest's MAC and seal time
as stored now, plus the session's shipped checkpoint notes, minus what Object Lock
keeps; a dry run shows the plan, a real run deletes it in DeleteObjects chunks of
at most 1,000, one ``remote.deleted`` event per batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .. import events as ev
from ..errors import UsageError
from ..layout import capture_keys, checkpoints_prefix, is_checkpoint_key, session_keys
from ..projections import BatchView, Projector
from ..when import parse_stored, parse_when, stored_ts
from .manifest import ManifestError, parse_manifest
from .stores import ObjectNotFound, Store

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


def refuse_empty_store(projector: Projector, store: Store) -> None:
    """UsageError when ``store`` cannot be the one the view's batches were archived to: it
    holds no object at all (a mistyped URL: no such directory, prefix or bucket), or none
    of this namespace while the view has batches not yet deleted remotely. A rotation
    that silently matches nothing is a mistake, not a success."""
    namespace = projector.dir.name
    if next(iter(store.list("")), None) is None:
        raise UsageError(f"store {store.url} holds no objects (does it exist?): nothing to rotate there")
    live = sum(1 for b in projector.batches() if b.state != "remote-deleted")
    if live and next(iter(store.list(f"{namespace}/")), None) is None:
        raise UsageError(
            f"store {store.url} holds nothing of namespace {namespace}, but the batch view has {live} "
            f"batch(es) archived to {', '.join(sorted({b.store for b in projector.batches()}))}: wrong --store?"
        )


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
    refuse_empty_store(projector, store)
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
    return [
        i.key
        for i in store.list(checkpoints_prefix(namespace, session))
        if is_checkpoint_key(namespace, session, i.key)
    ]


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
