"""Every name ledger gives a file on disk or an object in a cold store, in one place.

The hot tier (SPEC.md section 7) is ``<root>/<namespace>/`` holding the sessions
``<session>.ndjson`` and the writer's bookkeeping beside them; the cold tier
(SPEC.md section 8) is a tree of deterministic keys below a store's prefix. A
module that needs one of these names asks here, so that a reader, a writer and a
verifier can never disagree about where a thing lives.

Pure: names only, no I/O (listing a directory is the one exception, in
``session_files``, because which names count as sessions is a layout rule).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

# ---- hot tier: <root>/<namespace>/ ---------------------------------------------------

SESSION_SUFFIX = ".ndjson"
GZ_SUFFIX = ".ndjson.gz"
# The exclusive flock that makes one writer per namespace (SPEC.md 7).
LOCK_FILE = ".lock"
# The MACed summary of the last seal (ledger.lastseal is its codec).
LAST_SEAL_FILE = ".last-seal.json"
# The writer's drop counts, a fixed-size record rewritten in place.
DROPS_FILE = ".drops"
# One seal record per sealed session: what the archiver checks before re-verifying.
SEALS_DIR = ".seals"
# The LMDB projections.
VIEWS_DIR = ".views"
# Gzips being built for the cold tier, and the checkpoint shipping offsets.
OUTBOX_DIR = ".outbox"
CHECKPOINT_OFFSETS_FILE = "checkpoints.json"
# Default home of tcpdump's pcaps, per namespace.
CAPTURES_DIR = "captures"
PCAP_SUFFIX = ".pcap"
# <root>/.ledger-id: the root's identity when the configuration names no host_id.
ID_FILE = ".ledger-id"
# A newest session that failed verification at open is renamed to this, byte for byte.
QUARANTINE_SUFFIX = ".quarantined"
# Partial files: a gzip being written, a session being restored from the cold tier.
TMP_SUFFIX = ".tmp"
RESTORE_TMP_SUFFIX = ".restore.tmp"


def namespace_dir(root: str | os.PathLike[str], namespace: str) -> Path:
    return Path(root) / namespace


def session_path(ns_dir: Path, session: str) -> Path:
    return ns_dir / f"{session}{SESSION_SUFFIX}"


def is_session_name(name: str) -> bool:
    """``<session>.ndjson``; dot files (temp files, bookkeeping) are never sessions."""
    return name.endswith(SESSION_SUFFIX) and not name.startswith(".")


def session_files(ns_dir: Path) -> list[Path]:
    """The sessions of a namespace directory, oldest first (session ids sort by time)."""
    return sorted(p for p in ns_dir.glob(f"*{SESSION_SUFFIX}") if is_session_name(p.name))


def session_id(session_file: Path) -> str:
    """The session id a session file is named after (``<session>.ndjson``)."""
    return session_file.name.removesuffix(SESSION_SUFFIX)


def lock_path(ns_dir: Path) -> Path:
    return ns_dir / LOCK_FILE


def last_seal_path(ns_dir: Path) -> Path:
    return ns_dir / LAST_SEAL_FILE


def drops_path(ns_dir: Path) -> Path:
    return ns_dir / DROPS_FILE


def seals_dir(ns_dir: Path) -> Path:
    return ns_dir / SEALS_DIR


def seal_record_path(ns_dir: Path, session: str) -> Path:
    return ns_dir / SEALS_DIR / f"{session}.json"


def views_dir(ns_dir: Path) -> Path:
    return ns_dir / VIEWS_DIR


def outbox_dir(ns_dir: Path) -> Path:
    return ns_dir / OUTBOX_DIR


def outbox_gz_path(ns_dir: Path, session: str) -> Path:
    return ns_dir / OUTBOX_DIR / f"{session}{GZ_SUFFIX}"


def checkpoint_offsets_path(ns_dir: Path) -> Path:
    return ns_dir / OUTBOX_DIR / CHECKPOINT_OFFSETS_FILE


def captures_dir(root: str | os.PathLike[str], namespace: str) -> Path:
    return Path(root) / namespace / CAPTURES_DIR


def pcap_path(capture_dir: Path, capture_id: str) -> Path:
    """``<capture_dir>/<capture id>.pcap``: the file tcpdump writes (the directory is configurable)."""
    return capture_dir / f"{capture_id}{PCAP_SUFFIX}"


def capture_path(ns_dir: Path, capture_id: str) -> Path:
    """Where ``verify DIR`` looks for a capture not found at its event's path (SPEC.md 8.3)."""
    return pcap_path(ns_dir / CAPTURES_DIR, capture_id)


def id_path(root: str | os.PathLike[str]) -> Path:
    return Path(root) / ID_FILE


def quarantine_path(session_file: Path) -> Path:
    return session_file.with_name(session_file.name + QUARANTINE_SUFFIX)


def tmp_path(path: Path) -> Path:
    """The partial file a streamed write (an outbox gzip) goes to before its rename."""
    return path.with_name(path.name + TMP_SUFFIX)


def restore_tmp_path(dest: Path) -> Path:
    return dest.with_name(dest.name + RESTORE_TMP_SUFFIX)


# ---- cold tier: keys below a store's prefix (SPEC.md section 8) ------------------------


def _day(stamp: str) -> str:
    """YYYY/MM/DD from an id that starts with YYYYMMDD (sessions and captures)."""
    return f"{stamp[0:4]}/{stamp[4:6]}/{stamp[6:8]}"


class SessionKeys(msgspec.Struct, frozen=True):
    gz: str
    manifest: str
    sha256: str
    tsr: str

    def all(self) -> list[str]:
        return [self.gz, self.sha256, self.tsr, self.manifest]


def owner_key(namespace: str) -> str:
    """The object that says which ledger root owns a namespace (SPEC.md 8)."""
    return f"{namespace}/owner.json"


# The folders below a namespace that hold its archived objects (SPEC.md 8).
KEY_FOLDERS = ("sessions", "captures", "checkpoints")
MANIFEST_SUFFIX = ".manifest.json"


def key_namespace(key: str) -> str | None:
    """The namespace an archived object's key belongs to, or None for a key that is not
    below ``<namespace>/sessions|captures|checkpoints/`` (an owner.json, a stray object)."""
    parts = key.split("/")
    return parts[0] if len(parts) > 2 and parts[1] in KEY_FOLDERS else None


def sessions_prefix(namespace: str) -> str:
    """The prefix of every archived session object of a namespace (a listing lists it)."""
    return f"{namespace}/{KEY_FOLDERS[0]}/"


def namespace_url(object_url: str) -> str:
    """``<store URL>/<namespace>`` from the URL of one of that namespace's session objects."""
    return object_url.split("/sessions/", 1)[0]


def captures_prefix(namespace: str) -> str:
    """The prefix of every archived capture object of a namespace."""
    return f"{namespace}/{KEY_FOLDERS[1]}/"


def is_manifest_key(key: str) -> bool:
    return key.endswith(MANIFEST_SUFFIX)


def manifest_session(key: str) -> str:
    """The session a manifest key names (its last part, without the suffix).

    Precondition: ``is_manifest_key(key)``."""
    return key.rsplit("/", 1)[-1][: -len(MANIFEST_SUFFIX)]


def capture_key_id(key: str) -> str | None:
    """The capture id of an archived pcap's key, or None for any other key (its ``.sha256``)."""
    return key.rsplit("/", 1)[-1].removesuffix(PCAP_SUFFIX) if key.endswith(PCAP_SUFFIX) else None


def session_keys(namespace: str, session: str) -> SessionKeys:
    base = f"{namespace}/sessions/{_day(session)}/{session}"
    return SessionKeys(
        gz=f"{base}{GZ_SUFFIX}", manifest=f"{base}.manifest.json", sha256=f"{base}.sha256", tsr=f"{base}.tsr"
    )


def capture_keys(namespace: str, capture_id: str) -> tuple[str, str]:
    base = f"{namespace}/captures/{_day(capture_id)}/{capture_id}{PCAP_SUFFIX}"
    return base, base + ".sha256"


def checkpoints_prefix(namespace: str, session: str) -> str:
    """The prefix of every checkpoint of one session (a witness lists it)."""
    return f"{namespace}/checkpoints/{session}/"


def checkpoint_key(namespace: str, session: str, size: int) -> str:
    return f"{checkpoints_prefix(namespace, session)}{size}.checkpoint"


_CHECKPOINT_NAME = re.compile(r"^[0-9]+\.checkpoint$")


def is_checkpoint_key(namespace: str, session: str, key: str) -> bool:
    """Whether ``key`` is one of ``checkpoint_key(namespace, session, size)``, for some size."""
    prefix = checkpoints_prefix(namespace, session)
    return key.startswith(prefix) and _CHECKPOINT_NAME.match(key[len(prefix) :]) is not None
