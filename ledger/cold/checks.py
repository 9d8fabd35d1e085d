"""Reading the cold tier back, always through verification.

* ``verify_store``: every archived session of a namespace (or all namespaces):
  manifest HMAC, gzip and session sha256 and sizes, the session itself (streamed
  through the verifier, never whole in memory), the ``.sha256`` sidecar, the
  ``.tsr`` token, and the ``prev`` links across sessions; then the archived pcaps.
* ``restore_session``: download, verify, and write a session back to the hot tier.
* ``archived_lines``: the archived sessions' lines, for a rebuild of the views.
* ``tier_report``: where the hot tier ends and the cold tier begins, and whether
  they join without a gap.

Deleting from the cold tier is in ``rotation``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import layout
from ..capture_verify import CaptureCheck, check_bytes, missing, recorded_captures
from ..errors import EvidenceError, InputError
from ..files import fsync_dir
from ..layout import MANIFEST_SUFFIX as MANIFEST_SUFFIX  # re-exported by cold.remote
from ..layout import session_keys
from ..reader import session_paths
from ..verify import FileReport, FirstError, Policy, VerifyReport, check_prev_links, verify_file, verify_stream
from .archive import HashingReader
from .manifest import ManifestError, parse_manifest, sha256_sidecar
from .stores import ObjectNotFound, Store
from .tsa import TimestampInvalid, verify_token

# ---- verify ------------------------------------------------------------------------------


def store_namespaces(store: Store) -> list[str]:
    """Namespaces present in a store: first key segments with a sessions/, captures/ or
    checkpoints/ folder."""
    return sorted({ns for info in store.list("") if (ns := layout.key_namespace(info.key)) is not None})


def archived_manifests(store: Store, namespace: str) -> list[str]:
    """Manifest keys of a namespace in session order (the key's last part is the session id)."""
    keys = [i.key for i in store.list(layout.sessions_prefix(namespace)) if layout.is_manifest_key(i.key)]
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
        _flag_missing_tokens(reports)
        files.extend(reports)
        captures += verify_store_captures(store, ns, reports)
    if not files:
        raise InputError(
            f"{store.url}: no archived sessions found" + (f" for namespace {namespace}" if namespace else "")
        )
    report = VerifyReport(files)
    report.captures = captures
    return report


NO_TOKEN = "no RFC 3161 token (.tsr) in the store: no timestamp checked"


def _flag_missing_tokens(reports: list[FileReport]) -> None:
    """A session without a token among sessions with one says so: a deleted .tsr is seen."""
    stamped = any(n.startswith("RFC 3161 timestamp ") for r in reports for n in r.notes)
    if stamped or any(r.first_error and r.first_error.reason == "bad_timestamp" for r in reports):
        for r in reports:
            if NO_TOKEN in r.notes:
                r.notes[r.notes.index(NO_TOKEN)] = NO_TOKEN + ", although other sessions of this namespace have one"


def verify_store_captures(store: Store, namespace: str, reports: list[FileReport]) -> list[CaptureCheck]:
    """Every archived pcap of ``namespace`` against the capture.sealed event in the
    archived sessions just verified (``reports``); the ``.sha256`` sidecar is not read.

    A pcap their capture.offloaded events put in this store, and no remote.deleted
    took out, that is not there is ``missing_capture``. A pcap whose capture.sealed is
    in none of these sessions (recorded in a session still in the hot tier) is
    ``unrecorded``: the store alone cannot vouch for it.
    """
    sessions = [(r, archived_session_lines(store, namespace, r)) for r in reports if r.session]
    recorded = recorded_captures(sessions)
    checks = list(recorded.changed)
    base = store.url.rstrip("/")
    stored = {
        cid: i.key
        for i in store.list(layout.captures_prefix(namespace))
        if (cid := layout.capture_key_id(i.key)) is not None
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


def archived_session_lines(store: Store, namespace: str, report: FileReport) -> Callable[[], Iterator[bytes]]:
    """The lines of the archived session ``report`` verified, read again when called."""
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
    else:
        report.notes.append(NO_TOKEN)
    if problems and report.ok:
        reason, detail = problems[0]
        report.first_error = FirstError(None, None, reason, detail)
        report.sealed = False
    return report


# ---- restore -----------------------------------------------------------------------------


def restore_session(
    store: Store, namespace: str, session: str, to_root: Path, policy: Policy
) -> tuple[Path, FileReport]:
    """Download, verify, and write ``<to_root>/<namespace>/<session>.ndjson`` (0600).

    The durable path of files.replace_atomic, streamed: the gzip is decompressed into
    the layout's restore temp file, which is fsynced, verified again, renamed into
    place, and the directory fsynced (without that the rename can be lost in a crash).
    No partial file is left behind on any failure."""
    keys = session_keys(namespace, session)
    if store.head(keys.manifest) is None:
        raise InputError(f"{session}: not archived in {store.url} (no {keys.manifest})")
    report = verify_archived(store, keys.manifest, policy, None)
    if not report.ok:
        raise EvidenceError(f"{session}: archived copy does not verify: {report.first_error}")
    dest_dir = layout.namespace_dir(to_root, namespace)
    dest_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    dest = layout.session_path(dest_dir, session)
    if dest.exists():
        raise InputError(f"{dest} already exists")
    tmp = layout.restore_tmp_path(dest)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as out, store.open(keys.gz) as raw, gzip.GzipFile(fileobj=raw) as gz:
            while block := gz.read(1 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
    except gzip.BadGzipFile as exc:
        tmp.unlink(missing_ok=True)
        raise EvidenceError(f"{store.url}/{keys.gz}: {exc}") from exc
    except OSError as exc:
        # A full disk (or any failed write) leaves no partial file behind.
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    check = verify_file(tmp, Policy(keys=policy.keys, jobs=1))
    if not check.ok or check.root != report.root:
        tmp.unlink()
        raise EvidenceError(f"{session}: restored bytes do not verify")
    try:
        os.replace(tmp, dest)
        fsync_dir(dest_dir)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    return dest, check


def archived_lines(store: Store, namespace: str) -> Iterator[tuple[str, Iterator[bytes]]]:
    """(session, lines) of every archived session, streamed: for Projector.rebuild."""
    for key in archived_manifests(store, namespace):
        session = layout.manifest_session(key)
        yield session, _gz_lines(store, session_keys(namespace, session).gz)


def _gz_lines(store: Store, key: str) -> Iterator[bytes]:
    with store.open(key) as raw, gzip.GzipFile(fileobj=raw) as gz:
        carry = b""
        while block := gz.read(1 << 20):
            parts = (carry + block).split(b"\n")
            carry = parts.pop()
            yield from parts


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
    hot = session_paths(layout.namespace_dir(root, namespace))
    archived = [layout.manifest_session(k) for k in archived_manifests(store, namespace)]
    oldest_hot = layout.session_id(hot[0]) if hot else None
    newest_archived = archived[-1] if archived else None
    if not hot:
        return TierReport(namespace, None, newest_archived, True, "no hot sessions: everything is in the cold tier")
    first = verify_file(hot[0], Policy(allow_unsealed=True, jobs=1))
    prev = first.prev
    if prev is None:
        return TierReport(
            namespace, oldest_hot, newest_archived, True, "the oldest hot session is the namespace's first"
        )
    if prev.session in {layout.session_id(p) for p in hot} or prev.session in archived:
        where = "archived" if prev.session in archived else "hot"
        return TierReport(namespace, oldest_hot, newest_archived, True, f"{oldest_hot} links to {where} {prev.session}")
    return TierReport(
        namespace,
        oldest_hot,
        newest_archived,
        False,
        f"gap: {oldest_hot} links to {prev.session}, which is in neither tier",
    )
