"""Checks across the files of a namespace directory (SPEC.md sections 5 and 7): each
session names the one before it (``prev``), and the newest sealed session matches the
writer's ``.last-seal.json``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import msgspec

from .. import format as fmt
from .. import lastseal
from ..errors import InputError
from ..layout import LAST_SEAL_FILE, is_session_name, last_seal_path, session_path
from ..regular import NotRegularFile, read_small
from .policy import Policy
from .report import FileReport, FirstError


def session_files(root: Path) -> dict[Path, list[Path]]:
    """Session files below ``root`` grouped by namespace directory, each in session order."""
    groups: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        names = sorted(n for n in filenames if is_session_name(n))
        if names:
            groups[Path(dirpath)] = [Path(dirpath) / n for n in names]
    return groups


def prev_link(report: FileReport) -> fmt.PrevLink:
    """What the next session's ``prev`` must say about this sealed one."""
    return fmt.PrevLink(session=report.session or "", size=report.events, root=report.root, chain=report.chain)


def check_prev_links(reports: Sequence[FileReport]) -> None:
    """Each session of a namespace must name the one before it (in session order)."""
    for before, after in zip(reports, reports[1:], strict=False):
        if not after.ok or not before.ok or after.prev is None and before.session is None:
            continue
        if after.prev is None:
            after.first_error = FirstError(1, 0, "prev_mismatch", f"prev is null but {before.session} precedes it")
        elif not before.sealed:
            after.notes.append(f"previous session {before.session} is unsealed; prev link not checked")
        elif after.prev != prev_link(before):
            after.first_error = FirstError(
                1, 0, "prev_mismatch", f"prev does not match sealed session {before.session}"
            )
    if reports and reports[0].ok and reports[0].prev is not None:
        reports[0].notes.append(f"prev session {reports[0].prev.session} is not here (archived?); link not checked")


LAST_SEAL_LIMIT = 4096  # the record is a few hundred bytes


def check_last_seal(ns_dir: Path, reports: Sequence[FileReport], policy: Policy) -> list[FileReport]:
    """Compare the newest sealed session of a namespace directory with the writer's
    ``.last-seal.json`` (SPEC.md sections 5 and 7).

    With an HMAC key the record's MAC must verify (else ``bad_signature`` on the
    record), and a session it names that is neither present nor recorded as archived
    and deleted locally (an ``archive.local_deleted`` event in a later session) is
    ``missing_session``. Without a key the record is unauthenticated: it is reported,
    never trusted. Returns the reports to add (for the record or the missing session);
    notes go on the newest session's report.
    """
    path = last_seal_path(ns_dir)
    newest = reports[-1]
    try:
        raw = read_small(path, LAST_SEAL_LIMIT)
    except FileNotFoundError:
        newest.notes.append(f"no {LAST_SEAL_FILE}: the newest session is not checked against the writer's record")
        return []
    except NotRegularFile as exc:  # a FIFO, /dev/zero, a directory: the record fails, the rest is verified
        return [_record_failure(path, "malformed", exc.strerror)]
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    try:
        record = lastseal.parse(raw)
    except ValueError as exc:
        return [_record_failure(path, "malformed", str(exc))]
    namespace = ns_dir.name
    if not policy.keys:
        newest.notes.append(
            f"{LAST_SEAL_FILE} is unauthenticated (no HMAC key): its claim that {record.session} "
            "is the newest sealed session was not checked"
        )
        return []
    if not lastseal.authentic(namespace, record, policy.keys):
        return [_record_failure(path, "bad_signature", "its MAC does not verify with a trusted key (rewritten?)")]
    named = next((r for r in reports if r.session == record.session), None)
    if named is not None and named.ok and named.sealed and prev_link(named) != record.link():
        return [_record_failure(path, "prev_mismatch", f"does not match sealed session {record.session}")]
    sealed = [r.session for r in reports if r.ok and r.sealed and r.session]
    if sealed and max(sealed) > record.session:
        newest.notes.append(
            f"{LAST_SEAL_FILE} names {record.session}, older than the newest sealed session "
            "(a crash between a seal and the record?); the next writer open rewrites it"
        )
        return []
    if named is not None:
        return []
    if session_path(ns_dir, record.session).exists():
        newest.notes.append(f"{record.session} appeared while verifying (a live writer); not checked")
        return []
    if _records_local_deletion(reports, record.session):
        newest.notes.append(f"newest sealed session {record.session} was archived and deleted locally (recorded)")
        return []
    missing = FileReport(path=str(session_path(ns_dir, record.session)), session=record.session)
    missing.first_error = FirstError(
        None,
        None,
        "missing_session",
        f"{LAST_SEAL_FILE} names {record.session} as the newest sealed session ({record.size} lines); "
        "it is not here and no archive.local_deleted event records its deletion",
    )
    return [missing]


def _record_failure(path: Path, reason: str, detail: str) -> FileReport:
    r = FileReport(path=str(path))
    r.first_error = FirstError(None, None, reason, f"{LAST_SEAL_FILE}: {detail}")
    return r


def _records_local_deletion(reports: Sequence[FileReport], session: str) -> bool:
    """Whether a verified session after ``session`` holds ``archive.local_deleted`` for it."""
    needle = f'"session":"{session}"'.encode()
    for r in reports:
        if not (r.ok and r.session and r.session > session):
            continue
        with open(r.path, "rb") as f:
            for line in f:
                if b'"kind":"archive.local_deleted"' in line[:120] and needle in line and line.endswith(b"\n"):
                    try:
                        data = msgspec.json.decode(line).get("data")
                    except msgspec.DecodeError:
                        continue
                    if isinstance(data, dict) and data.get("session") == session:
                        return True
    return False
