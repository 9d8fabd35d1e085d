"""Captures across both tiers (``ledger verify --tiers ROOT --store URL``).

Each tier alone misses captures whose events straddle the two: a pcap still local whose
``capture.sealed`` is in a session already archived (exactly what ``ledger demo`` leaves)
is checked by neither ``verify DIR`` nor ``verify URL``; a pcap whose ``capture.offloaded``
is in a hot session is never looked for in the store. Here the verified sessions of both
tiers are folded together, in session order, and those captures are checked too:

* a local pcap whose ``capture.sealed`` is in an archived session, never evicted: its
  bytes on disk against that event (a FIFO or directory in its place fails);
* a pcap the events shipped to this store, with no remote.deleted since, and that the
  store-only check could not judge (``unrecorded``) or did not look for: present in the
  store with the bytes of its ``capture.sealed``, else ``missing_capture``.

The views are not read: only events from sessions that verified with the key count.
"""

from __future__ import annotations

from pathlib import Path

from ..capture_verify import (
    CaptureCheck,
    _check_local,
    _file_lines,
    check_bytes,
    might_hold_captures,
    missing,
    recorded_captures,
)
from ..layout import capture_keys, namespace_dir, session_id, sessions_prefix
from ..verify import FileReport
from .checks import archived_session_lines
from .stores import ObjectNotFound, Store


def verify_tier_captures(
    store: Store, root: Path, namespace: str, files: list[FileReport], done: list[CaptureCheck]
) -> list[CaptureCheck]:
    """The captures of ``namespace`` that straddle the tiers, checked (see the module).

    Precondition: ``files`` holds the reports of the hot sessions under ``root`` and of
    the archived sessions in ``store`` (verified); ``done`` the capture checks already
    made. Returns the new checks; the caller drops the ``unrecorded`` ones of ``done``
    that they judge (``replaces``).
    """
    base = store.url.rstrip("/")
    ns_dir = namespace_dir(root, namespace).resolve()
    archived = [f for f in files if f.ok and f.session and f.path.startswith(f"{base}/{sessions_prefix(namespace)}")]
    hot = [f for f in files if f.ok and Path(f.path).resolve().parent == ns_dir]
    hot = [f for f in hot if might_hold_captures(f.path)]
    sessions = [(f, archived_session_lines(store, namespace, f)) for f in archived]
    sessions += [(f, _file_lines(f.path)) for f in hot]
    sessions.sort(key=lambda s: s[0].session or session_id(Path(s[0].path)))
    recorded = recorded_captures(sessions)
    archived_ids = {f.session for f in archived}
    judged = {c.capture_id for c in done if c.verdict != "unrecorded"}
    checks: list[CaptureCheck] = []
    for cid, rec in sorted(recorded.captures.items()):
        if rec.session in archived_ids and not rec.evicted:
            checks.append(_check_local(rec, ns_dir))
        off = rec.offloaded
        if off is None or rec.remote_deleted or off.store.rstrip("/") != base or cid in judged:
            continue
        key = capture_keys(namespace, cid)[0]
        try:
            checks.append(check_bytes(rec, f"{base}/{key}", lambda key=key: store.open(key)))
        except ObjectNotFound:
            why = f"its capture.offloaded put it at {off.key} (no remote.deleted since), and it is not there"
            checks.append(missing(rec, f"{base}/{key}", why))
    return checks


def replaces(done: list[CaptureCheck], new: list[CaptureCheck]) -> list[CaptureCheck]:
    """``done`` without its ``unrecorded`` checks of captures that ``new`` judged (a capture
    is ``unrecorded`` in a tier only when its capture.sealed is in the other one)."""
    judged = {c.capture_id for c in new}
    return [c for c in done if not (c.verdict == "unrecorded" and c.capture_id in judged)]


def view_shipped_missing(store: Store, namespace: str, views, done: list[CaptureCheck]) -> list[CaptureCheck]:
    """``missing_capture`` for each capture the pointer view ``views`` says was shipped to
    ``store`` (offloaded, no remote.deleted since) that the store does not hold as a
    regular object, unless ``done`` already judged it. For ``verify URL`` with a root:
    the archived sessions alone do not know of a capture.offloaded still in a hot one.
    Only absence is judged here: the view never passes nor fails a pcap's bytes."""
    base = store.url.rstrip("/")
    judged = {c.capture_id for c in done if c.verdict != "unrecorded"}
    checks = []
    for v in views:
        if v.state != "offloaded" or (v.store or "").rstrip("/") != base or v.capture_id in judged:
            continue
        key = capture_keys(namespace, v.capture_id)[0]
        if store.head(key) is None:
            checks.append(
                CaptureCheck(
                    capture_id=v.capture_id,
                    where=f"{base}/{key}",
                    verdict="missing_capture",
                    detail=f"the pointer view says it was shipped to {base} (no remote.deleted since), and it is not there",
                    expected_bytes=v.bytes,
                    expected_sha256=v.sha256,
                    session=v.session,
                )
            )
    return checks
