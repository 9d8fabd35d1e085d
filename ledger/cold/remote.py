"""What is done to the cold tier after archiving: verify it, restore from it, expire it.

* ``verify_store``: every archived session of a namespace (or all namespaces):
  manifest HMAC, gzip and session sha256 and sizes, the session itself (streamed
  through the verifier, never whole in memory), the ``.sha256`` sidecar, the
  ``.tsr`` token, and the ``prev`` links across sessions.
* ``restore_session``: download, verify, and write a session back to the hot tier.
* ``rotate_remote``: delete objects older than a date by the exact keys the batch
  view recorded (never by listing a prefix), in DeleteObjects chunks of at most
  1,000, one ``remote.deleted`` event per batch.
* ``tier_report``: where the hot tier ends and the cold tier begins, and whether
  they join without a gap.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import events as ev
from ..errors import EvidenceError, InputError
from ..projections import Projector
from ..reader import session_paths
from ..verify import FileReport, FirstError, Policy, VerifyReport, check_prev_links, verify_file, verify_stream
from .archive import HashingReader
from .manifest import ManifestError, parse_manifest, session_keys, sha256_sidecar
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
    for ns in namespaces:
        reports = [verify_archived(store, key, policy, tsa_ca_pem) for key in archived_manifests(store, ns)]
        check_prev_links(reports)
        files.extend(reports)
    if not files:
        raise InputError(
            f"{store.url}: no archived sessions found" + (f" for namespace {namespace}" if namespace else "")
        )
    return VerifyReport(files)


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out, store.open(keys.gz) as raw, gzip.GzipFile(fileobj=raw) as gz:
        while block := gz.read(1 << 20):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    check = verify_file(tmp, Policy(keys=policy.keys, jobs=1))
    if not check.ok or check.root != report.root:
        tmp.unlink()
        raise EvidenceError(f"{session}: restored bytes do not verify")
    os.replace(tmp, dest)
    return dest, check


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


@dataclass
class RotateReport:
    before: str
    batches: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    requests: int = 0
    dry_run: bool = False


def rotate_remote(projector: Projector, store: Store, recorder, before: str, dry_run: bool = False) -> RotateReport:
    """Delete archived objects sealed before ``before`` (RFC 3339 or YYYY-MM-DD), by exact key."""
    report = RotateReport(before=before, dry_run=dry_run)

    def delete(keys: list[str], batch_ids: list[str], capture_ids: list[str]) -> None:
        """One DeleteObjects round (the store chunks by 1,000) and its remote.deleted event."""
        if dry_run:
            report.deleted.extend(keys)
            return
        result = store.delete_many(keys)
        report.requests += getattr(result, "requests", 0)
        report.deleted.extend(result.deleted)
        report.kept.extend(result.errors)
        recorder.record(
            ev.RemoteDeleted(
                store=store.url,
                before=before,
                batch_ids=batch_ids,
                capture_ids=capture_ids,
                deleted=result.deleted,
                kept=result.errors,
            )
        )

    for batch in projector.batches():
        if batch.state == "remote-deleted" or batch.sealed_at >= before or batch.store != store.url:
            continue
        # Every key the batch recorded; a partly-deleted batch retries all of them, since
        # DeleteObjects reports keys already gone as deleted.
        report.batches.append(batch.batch_id)
        delete([o.key for o in batch.objects], [batch.batch_id], [])
    old_caps = [
        c
        for c in projector.captures()
        if c.state == "offloaded" and c.remote_key and c.store == store.url and c.started_at < before
    ]
    for start in range(0, len(old_caps), 1000):
        chunk = old_caps[start : start + 1000]
        report.captures.extend(c.capture_id for c in chunk)
        delete([k for c in chunk for k in (c.remote_key, c.remote_key + ".sha256")], [], [c.capture_id for c in chunk])
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
