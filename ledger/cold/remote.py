"""Kept so that ``from ledger.cold.remote import ...`` still works: what this module
held is now in ``checks`` (verify, restore, read back, tier report) and ``rotation``
(expiring the cold tier). New code imports from those."""

from .checks import (
    MANIFEST_SUFFIX,
    TierReport,
    archived_lines,
    archived_manifests,
    restore_session,
    store_namespaces,
    tier_report,
    verify_archived,
    verify_store,
    verify_store_captures,
)
from .rotation import (
    BAD_MANIFEST,
    LOCKED,
    UNVERIFIED,
    RotatePlan,
    RotateReport,
    RotateStep,
    cutoff_refusal,
    plan_rotation,
    refuse_empty_store,
    rotate_remote,
)

__all__ = [
    "BAD_MANIFEST",
    "LOCKED",
    "MANIFEST_SUFFIX",
    "UNVERIFIED",
    "RotatePlan",
    "RotateReport",
    "RotateStep",
    "TierReport",
    "archived_lines",
    "archived_manifests",
    "cutoff_refusal",
    "plan_rotation",
    "refuse_empty_store",
    "restore_session",
    "rotate_remote",
    "store_namespaces",
    "tier_report",
    "verify_archived",
    "verify_store",
    "verify_store_captures",
]
