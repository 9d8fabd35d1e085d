"""Commands on the hot tier: keygen, capture, captures, gc, rebuild, batches."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import keys as keymod
from ..errors import LedgerError
from . import Outcome, app, guarded, outcome_of
from .options import (
    ConfigOpt,
    JsonOpt,
    KeyFiles,
    NamespaceOpt,
    RootOpt,
    StoreOpt,
    _capture_options,
    _config,
    _hot_projector,
    _need_key,
    _open_store,
    _projector,
    _writer,
)
from .render import _batches_table, _captures_table, _out_console, _print_json


@app.command()
@guarded
def keygen(
    name: Annotated[
        str | None, typer.Argument(help="Make an Ed25519 signer key with this name (C2SP signed-note).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Signer key file (default: NAME.signer.key).")] = None,
    hmac_file: Annotated[Path | None, typer.Option("--hmac", help="Write a new 32-byte HMAC key here.")] = None,
    fs_seed: Annotated[
        Path | None, typer.Option("--fs-seed", help="Write a forward-secure sealing seed here (for the auditor).")
    ] = None,
    fs_state: Annotated[
        Path | None, typer.Option("--fs-state", help="The writer's ratchet state (default: FS_SEED.state).")
    ] = None,
    fs_interval: Annotated[int, typer.Option("--fs-interval", min=1, help="Seconds per sealing epoch.")] = 900,
    as_json: JsonOpt = False,
) -> None:
    """Create key files (mode 0600, never overwritten). Prints public names, never secrets."""
    from .. import fsseal, notes

    if not (name or hmac_file or fs_seed):
        raise LedgerError("give NAME (Ed25519 signer), --hmac FILE, or --fs-seed FILE")
    made: dict = {}  # what --json prints: paths and public names, never a secret
    if hmac_file:
        kid = keymod.write_key_file(hmac_file)
        print(f"wrote {hmac_file} (HMAC key id {kid})", file=sys.stderr)
        made["hmac"] = {"path": str(hmac_file), "key_id": kid}
        if not as_json:
            print(kid)
    if name:
        if not notes.is_valid_name(name):
            raise LedgerError(f"invalid key name {name!r}: no spaces or '+'")
        path = out or Path(f"{name}.signer.key")
        vkey = notes.write_signer_key_file(path, notes.generate_signer(name))
        print(f"wrote {path}; verifier key (give it to auditors):", file=sys.stderr)
        made["signer"] = {"path": str(path), "name": name, "verifier_key": vkey}
        if not as_json:
            print(vkey)
    if fs_seed:
        ratchet = fsseal.write_fs_seed(fs_seed, interval_s=fs_interval)
        state = fs_state or fs_seed.with_name(fs_seed.name + ".state")
        try:
            fsseal.write_fs_state(state, ratchet)
        except BaseException:
            fs_seed.unlink(missing_ok=True)  # just made, shared with no one: no seed without its state
            raise
        print(
            f"wrote seed {fs_seed} (seed id {ratchet.seed_id}; move it OFF this host) and writer state {state}",
            file=sys.stderr,
        )
        made["fs_seed"] = {"path": str(fs_seed), "seed_id": ratchet.seed_id, "state": str(state)}
    if as_json:
        _print_json({"ok": True, **made})


@app.command()
@guarded
def capture(
    ip: Annotated[str, typer.Option("--ip", help="Client address to capture (validated).")],
    cn: Annotated[str, typer.Option("--cn", help="Client name (never used in argv or paths).")],
    reason: Annotated[str, typer.Option("--reason", help="Why: recorded in the capture events.")],
    duration: Annotated[int | None, typer.Option("--duration", min=1, max=3600, help="Seconds.")] = None,
    interface: Annotated[str | None, typer.Option("--interface", help="Interface (default: any).")] = None,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    key_file: KeyFiles = None,
) -> None:
    """A manual capture: run a bounded tcpdump now, wait, print the pointer event as JSON."""
    from ..capture import capture_now

    cfg = _config(config, root, namespace)
    keys = _need_key(cfg, key_file)
    options = _capture_options(cfg, interface, duration)
    with _writer(cfg, keys) as led:
        result = capture_now(led, options, cn, ip, reason, duration)
    _print_json(result.event)
    if not result.ok:
        raise LedgerError(f"capture failed: {result.event.cause}")
    if result.outcome == "empty":
        print(f"ledger: capture {result.capture_id} is empty: no packet of {ip} was seen", file=sys.stderr)


@app.command()
@guarded
def captures(
    as_json: JsonOpt = False,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
) -> Outcome:
    """The pointer view: every capture, where it is and what it must hash to."""
    return _show_view(_config(config, root, namespace), "captures", _captures_table, as_json)


def _show_view(cfg, name: str, table, as_json: bool) -> Outcome:
    """Catch the projection up, then print one of its views as JSON or a table."""
    with _projector(cfg) as views:
        result = views.catch_up()
        rows = getattr(views, name)()
    if as_json:
        _print_json(rows)
    else:
        console = _out_console()
        console.print(table(rows, width=console.width))
    return _warn_changed(result)


def _warn_changed(result) -> Outcome:
    """A sealed session that changed after it was folded is tamper evidence (exit 1),
    though the views now show what the files say: LMDB on the same disk is no witness,
    the files are what `ledger verify` can judge. Repeated until `ledger rebuild`."""
    for line in result.changed:
        print(
            f"ledger: warning: {line}; views rebuilt from the files (check with ledger verify; "
            "ledger rebuild acknowledges)",
            file=sys.stderr,
        )
    return outcome_of(not result.changed)


@app.command()
@guarded
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be evicted; change nothing.")] = False,
    max_files: Annotated[int | None, typer.Option("--max-files", min=0)] = None,
    max_bytes: Annotated[int | None, typer.Option("--max-bytes", min=0)] = None,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    key_file: KeyFiles = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Evict local captures oldest first until the count and byte budgets hold (offloaded ones first:
    a capture counts as offloaded only once its object is confirmed in the store)."""
    import msgspec

    from ..capture import gc_captures

    cfg = _config(config, root, namespace, store)
    keys = None if dry_run else _need_key(cfg, key_file)  # refused before anything is touched
    options = _capture_options(cfg)
    if max_files is not None or max_bytes is not None:
        options = msgspec.structs.replace(
            options,
            max_files=options.max_files if max_files is None else max_files,
            max_bytes=options.max_bytes if max_bytes is None else max_bytes,
        )
    with _projector(cfg) as views:
        views.catch_up()
        offloaded, unconfirmed = _offloaded_in_store(cfg, views.captures())
        in_flight = {v.capture_id for v in views.captures() if v.state == "capturing"}
    if dry_run:
        evicted = gc_captures(None, options, dry_run=True, is_offloaded=offloaded.__contains__, in_flight=in_flight)
    else:
        with _writer(cfg, keys) as led:
            evicted = gc_captures(led, options, is_offloaded=offloaded.__contains__, in_flight=in_flight)
    if as_json:
        _print_json({"ok": True, "dry_run": dry_run, "evicted": evicted})
    else:
        for e in evicted:
            flag = "offloaded" if e.offloaded else "NOT offloaded" + unconfirmed.get(e.capture_id, "")
            print(f"{'would evict' if dry_run else 'evicted'} {e.capture_id} ({e.bytes:,} bytes, {e.reason}, {flag})")
    print(f"{len(evicted)} capture(s) {'to evict' if dry_run else 'evicted'}", file=sys.stderr)


def _offloaded_in_store(cfg, views) -> tuple[set[str], dict[str, str]]:
    """The local captures whose object the store holds now (HEAD of the key derived from
    the id, size and sha256 of its capture.sealed), and why each other capture the view
    calls offloaded is not: the view alone never makes a local pcap the spare copy."""
    from ..layout import capture_keys

    claimed = [v for v in views if v.state == "offloaded" and v.local]
    if not claimed:
        return set(), {}
    if not cfg.cold.store:
        return set(), {v.capture_id: ": no store configured to confirm a copy" for v in claimed}
    cold = _open_store(cfg)
    confirmed, why = set(), {}
    for v in claimed:
        info = cold.head(capture_keys(cfg.ns, v.capture_id)[0])
        if info is not None and (info.size, info.sha256) == (v.bytes, v.sha256):
            confirmed.add(v.capture_id)
        else:
            state = "missing from" if info is None else "different in"
            why[v.capture_id] = f": its object is {state} {cold.url}; the local pcap is the only copy"
    return confirmed, why


@app.command()
@guarded
def rebuild(
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    hot_only: Annotated[
        bool,
        typer.Option("--hot-only", help="Rebuild from the hot tier alone even if that drops archived batches."),
    ] = False,
    as_json: JsonOpt = False,
) -> Outcome:
    """Drop the views and replay the whole history: the hot tier and the archived sessions
    in the store (--store, else the configured one). Without a store, refuses to drop
    batches of sessions archived and deleted here."""
    cfg = _config(config, root, namespace, store)
    cold = _open_store(cfg) if cfg.cold.store and not hot_only else None
    with _projector(cfg, cold) if cold else _hot_projector(cfg) as views:
        result = views.rebuild(allow_loss=hot_only)
        n_caps, n_batches = len(views.captures()), len(views.batches())
    if as_json:
        _print_json(
            {
                "ok": not result.changed,
                "applied": result.applied,
                "folded": result.folded,
                "store": cold.url if cold else None,
                "captures": n_caps,
                "batches": n_batches,
                "changed": result.changed,
            }
        )
    where = f"{result.folded.get('archived', 0)} archived session(s) from {cold.url} and " if cold else ""
    print(
        f"rebuilt from {result.applied:,} events: {where}{result.folded.get('local', 0)} local session(s) "
        f"from {Path(cfg.root) / cfg.ns}; {n_caps} captures, {n_batches} batches",
        file=sys.stderr,
    )
    return _warn_changed(result)


@app.command()
@guarded
def batches(
    as_json: JsonOpt = False,
    root: RootOpt = None,
    namespace: NamespaceOpt = None,
    config: ConfigOpt = None,
) -> Outcome:
    """The batch view: sessions archived to cold storage and what became of them."""
    return _show_view(_config(config, root, namespace), "batches", _batches_table, as_json)


# ---- cold storage ---------------------------------------------------------------------------
