"""The tail command: print the last events of a ledger, follow it, verify as it goes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import EvidenceError
from . import Outcome, app, guarded
from .options import (
    ConfigOpt,
    FsSeedOpt,
    KeyFiles,
    PubkeyOpt,
    RootOpt,
    _config,
    _config_keys,
    _given_root,
    _load_secret,
)
from .render import _Console, _err_console, _quiet_broken_pipe, _tail_event_text, _tail_verified_text


def _tail_stop_fd() -> int | None:
    """stdout when it is a pipe or socket: `tail -f | head` stops once head has gone."""
    import stat

    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _tail_flush(out) -> None:
    try:
        out.flush()
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _quiet_broken_pipe()


def _refuse_gzip(path: Path) -> None:
    """tail follows live session files; an archived .ndjson.gz is for verify to read."""
    from ..errors import UsageError
    from ..verify import GZIP_MAGIC, not_regular

    if path.is_file() and not not_regular(path):
        try:
            with open(path, "rb") as f:
                magic = f.read(2)
        except OSError:
            return  # follow() reports it
        if magic == GZIP_MAGIC:
            raise UsageError(
                f"{path} is gzip-compressed (an archived session): tail follows live session files; "
                f"check it with `ledger verify {path}`"
            )


@app.command()
@guarded
def tail(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A session file, a namespace directory or a root directory (default: --root).", show_default=False
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new events as they are written, across rotations.")
    ] = False,
    lines: Annotated[
        int | None,
        typer.Option(
            "-n",
            "--lines",
            min=0,
            show_default=False,
            help="Print the last N matching events first (default 10; with --since, all since TIME).",
        ),
    ] = None,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help="Only kinds matching this glob (capture.*); repeatable.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after TIME: 10m, 2h, 1d, a date or RFC 3339.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="With a root directory: follow only this namespace.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the stored lines unchanged (NDJSON).")] = False,
    check: Annotated[
        bool,
        typer.Option("--verify", help="Check chain, seq and checkpoints of everything read; exit 1 at a break."),
    ] = False,
    key_file: KeyFiles = None,
    pubkey: PubkeyOpt = None,
    fs_seed: FsSeedOpt = None,
    root: RootOpt = None,
    config: ConfigOpt = None,
    poll: Annotated[bool, typer.Option("--poll", hidden=True, help="Poll instead of using inotify.")] = False,
) -> Outcome:
    """Print the last events of a ledger; follow it live with -f, verifying as it goes with --verify."""
    import io
    from contextlib import closing

    from rich.text import Text

    from .. import fsseal, notes
    from ..errors import UsageError
    from ..tail import IDLE, Notice, SessionChange, TailEvent, TailOptions, Verified, parse_since, target_kind
    from ..tail import follow as follow_path

    for given, option in ((key_file, "--key-file"), (pubkey, "--pubkey"), (fs_seed, "--fs-seed")):
        if given and not check:
            raise UsageError(f"{option} needs --verify")
    # The namespace filter is tail's own --namespace: the configuration's is left out here.
    cfg = _config(config, root, None)
    if path is None:
        path = _given_root(cfg, root)
        if path is None:
            raise UsageError("nothing to tail: give PATH, or --root ROOT (or LEDGER_ROOT)")
    _refuse_gzip(path)
    opts = TailOptions(
        lines=10 if lines is None and since is None else lines,
        follow=follow,
        kinds=tuple(kind or ()),
        since=parse_since(since) if since is not None else None,
        namespace=namespace,
        verify=check,
        keys=_config_keys(cfg, key_file) if check else (),
        # As `ledger verify` takes them (cli/checks.py): trusted besides the HMAC keys.
        verifiers=tuple(notes.load_verifier_keys(pubkey or [])),
        fs_seeds=tuple(_load_secret(fsseal.load_fs_seed, p, False, "seed file") for p in fs_seed or []),
        poll=True if poll else None,
        stop_fd=_tail_stop_fd() if follow else None,
    )
    multi = namespace is None and target_kind(path) == "root"
    # Our own buffer on fd 1 (even under PYTHONUNBUFFERED): one write() per batch, flushed when idle.
    out = io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "wb", closefd=False), 1 << 16)
    plain = bool(os.environ.get("NO_COLOR"))  # no colour, and no bold or dim either
    console = _Console(
        highlight=False, soft_wrap=True, markup=False, emoji=False, color_system=None if plain else "auto"
    )
    err = _err_console()
    try:
        with closing(follow_path(path, opts)) as items:
            for item in items:
                if isinstance(item, TailEvent):
                    if as_json:
                        out.write(item.raw)
                    else:
                        console.print(_tail_event_text(item, multi))
                elif item is IDLE:
                    _tail_flush(out)
                elif isinstance(item, SessionChange):
                    if item.previous is not None and not as_json:
                        console.rule(Text(f"{item.namespace} · {item.session}"))
                elif isinstance(item, Verified):
                    err.print(Text(f"ledger: {_tail_verified_text(item)}"))
                elif isinstance(item, Notice):
                    err.print(Text(f"ledger: {item.message}"))
    except KeyboardInterrupt:  # Ctrl-C: like coreutils tail -f, 130 (not "everything checked holds")
        _tail_flush(out)
        raise
    except EvidenceError as exc:
        _tail_flush(out)
        err.print(Text(f"ledger: VERIFY FAILED: {exc}", style="bold red"))
        return Outcome.EVIDENCE
    _tail_flush(out)
    return Outcome.HOLDS
