"""Commands on the cold tier: archive, rotate-remote, restore."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..config import DEFAULT_HOT_RETENTION_DAYS
from ..errors import UsageError
from ..verify import Policy
from . import CommandFailed, Outcome, app, guarded
from .options import (
    ConfigOpt,
    JsonOpt,
    KeyFiles,
    NamespaceOpt,
    RootOpt,
    StoreOpt,
    _config,
    _need_key,
    _open_store,
    _projector,
    _writer,
)
from .render import _batches_table, _out_console, _print_json


@app.command()
@guarded
def archive(
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    key_file: KeyFiles = None,
    hot_retention_days: Annotated[
        float | None,
        typer.Option(
            "--hot-retention-days",
            min=0,
            show_default=False,
            help=f"Keep archived sessions locally this many days (default {DEFAULT_HOT_RETENTION_DAYS:g}, "
            "or [cold] hot_retention_days / LEDGER_HOT_RETENTION_DAYS; 0 deletes them once archived).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> Outcome:
    """One archive pass: ship sealed sessions and captures, confirm, record, delete what is due."""
    from ..cold.archive import Archiver
    from ..cold.owner import claim_namespace
    from ..identity import root_identity

    cfg = _config(config, root, namespace, store)
    keys = _need_key(cfg, key_file)
    cold = _open_store(cfg)
    days = cfg.cold.hot_retention_days if hot_retention_days is None else hot_retention_days
    identity = root_identity(cfg.root, cfg.host_id)
    # Before a writer is opened (which adds a session to the root): an unreachable store,
    # or a namespace another root owns, fails here and leaves no trace.
    claim_namespace(cold, cfg.ns, identity)
    with _projector(cfg, cold) as views:  # a damaged view is repaired (or refused) before a writer opens
        views.catch_up()
    with _writer(cfg, keys) as led:
        archiver = Archiver(
            cfg.root,
            cfg.ns,
            cold,
            led,
            list(keys),
            hot_retention_s=days * 86400,
            tsa_url=cfg.cold.tsa_url,
            jobs=0,
            identity=identity,
        )
        try:
            report = archiver.run_once()
            led.flush()
            archiver.projector.catch_up()  # LMDB allows one open of the views per process
            rows = archiver.projector.batches()
        finally:
            archiver.close()
    if as_json:
        ok = not (report.evidence or report.errors)
        _print_json({"ok": ok, "hot_retention_days": days, "pass": report, "batches": rows})
    else:
        _out_console().print(_batches_table(rows))
    again = f", re-uploaded {len(report.reuploaded)} the store had lost" if report.reuploaded else ""
    print(
        f"archived {len(report.batches)} session(s), {len(report.captures)} capture(s){again}; "
        f"deleted {len(report.local_deleted)} local session(s) (hot retention {days:g} days); "
        f"{len(report.errors)} error(s)",
        file=sys.stderr,
    )
    for err in report.errors:
        print(f"ledger: error: {err}", file=sys.stderr)
    if report.evidence:
        return Outcome.EVIDENCE  # a session that does not verify: left in place, named above
    if report.errors:
        return Outcome.INCOMPLETE
    return Outcome.HOLDS


@app.command("rotate-remote")
@guarded
def rotate_remote_cmd(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Delete objects sealed before TIME: 90d, 12h, 30m, 45s before now; a date "
            "(2026-11-23 = midnight UTC); or RFC 3339 with Z or an offset. Anything else exits 2.",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List exactly the keys a real run would delete; delete nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Allow a cut-off in the future or newer than now minus the hot retention."),
    ] = False,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    key_file: KeyFiles = None,
    as_json: JsonOpt = False,
) -> None:
    """Expire the cold tier by exact keys from the batch view (never by listing a prefix).

    Each session is confirmed by its manifest in the store (MAC, seal time) before its
    objects go. Exits 2 when any key was kept (Object Lock, a store error, a manifest
    missing or not confirming the view), 1 when a manifest fails its MAC.
    """
    import msgspec

    from ..cold.archive import Recorder
    from ..cold.remote import cutoff_refusal, refuse_empty_store, rotate_remote
    from ..when import parse_when

    cutoff = parse_when(before, option="--before")  # a bad TIME stops here, before any store is opened
    cfg = _config(config, root, namespace, store)
    refusal = cutoff_refusal(cutoff, cfg.cold.hot_retention_days * 86400)
    if refusal and not force:
        raise UsageError(f"--before {before.strip()!r}: {refusal}; give --force to rotate anyway")
    keys = _need_key(cfg, key_file)  # a dry run too: the plan checks each manifest's MAC
    cold = _open_store(cfg)
    with _projector(cfg) as views:  # a store that cannot be the view's is refused before a writer opens
        views.catch_up()
        refuse_empty_store(views, cold)
    if dry_run:
        with _projector(cfg) as views:
            views.catch_up()
            report = rotate_remote(views, cold, None, cutoff, dry_run=True, keys=keys)
    else:
        with _writer(cfg, keys) as led, _projector(cfg) as views:
            led.flush()
            views.catch_up()
            report = rotate_remote(views, cold, Recorder(led), cutoff, keys=keys)
    result = {**msgspec.to_builtins(report), "ok": not report.kept}
    if as_json:
        if not report.kept:  # else the error object below carries the report: one object either way
            _print_json(result)
    else:
        for key in report.deleted:
            print(f"{'would delete' if dry_run else 'deleted'} {key}")
    for kept in report.kept:
        print(
            f"ledger: {'would keep' if dry_run else 'kept'} {kept.get('key')}: "
            f"{kept.get('code')} {kept.get('message', '')}",
            file=sys.stderr,
        )
    print(
        f"before {report.before}: {len(report.batches)} batch(es), {len(report.captures)} capture(s): "
        f"{len(report.deleted)} key(s) {'to delete' if dry_run else 'deleted'}, {len(report.kept)} kept, "
        f"{report.requests} request(s)",
        file=sys.stderr,
    )
    if report.kept:
        # A manifest that fails its MAC is bad evidence (1); a lock, a store error or a
        # view the store does not confirm left the job undone, the evidence intact (2).
        outcome = Outcome.EVIDENCE if report.evidence_problem else Outcome.INCOMPLETE
        raise CommandFailed(f"{len(report.kept)} key(s) kept, not deleted", outcome, result)


@app.command()
@guarded
def restore(
    session: Annotated[str, typer.Argument(help="Session id to bring back.")],
    to: Annotated[
        Path, typer.Option("--to", help="Hot-tier root to write the restored session into (below its namespace).")
    ],
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    key_file: KeyFiles = None,
    as_json: JsonOpt = False,
) -> None:
    """Download an archived session, verify it, and write it back to the hot tier."""
    from ..cold.remote import restore_session
    from ..events import ArchiveRestored
    from ..format import format_ts

    cfg = _config(config, root, namespace, store)
    keys = _need_key(cfg, key_file)
    cold = _open_store(cfg)
    dest, report = restore_session(cold, cfg.ns, session, to, Policy(keys=keys))
    if Path(cfg.root).resolve() == to.resolve():
        with _writer(cfg, keys) as led:
            led.record(
                "archive.restored",
                ArchiveRestored(batch_id=session, session=session, path=str(dest), restored_at=format_ts()),
            )
    if as_json:
        _print_json({"ok": True, "session": session, "path": str(dest), "events": report.events})
    print(f"restored {dest}: {report.events} events, verified", file=sys.stderr)
