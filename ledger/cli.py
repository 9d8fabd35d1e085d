"""The `ledger` command: a thin typer layer over the library.

Each command calls one library function and renders what comes back. Exit codes
are decided here and only here (README "Exit codes"):

* 0: everything checked holds;
* 1: an evidence problem (tamper, corruption, bad signature, unsealed, broken link);
* 2: could not check or act (usage, I/O, bad key file, configuration).

Data (JSON, events) goes to stdout; summaries and diagnostics go to stderr. No
traceback is ever shown unless --debug is given.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import keys as keymod
from .errors import EvidenceError, LedgerError
from .verify import FileReport, Policy, VerifyReport, verify_path

EXIT_OK, EXIT_EVIDENCE, EXIT_ERROR = 0, 1, 2

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Tamper-evident evidence ledger.",
)
_state = {"debug": False}


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, no_color=bool(os.environ.get("NO_COLOR")) or None)


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print one diagnostic line to stderr and return the Exit to raise."""
    print(f"ledger: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def guarded(fn):
    """Map library errors to one stderr line and an exit code (the one place that does)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except EvidenceError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), EXIT_EVIDENCE) from None
        except LedgerError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(0) from None
        except OSError as exc:
            if _state["debug"]:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:  # a bug: still one line, no locals, no traceback
            if _state["debug"]:
                raise
            raise fail(f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug)") from None

    return wrapper


def _quiet_broken_pipe() -> None:
    # Python would complain again when flushing stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def load_keys(key_files: list[Path] | None) -> tuple[bytes, ...]:
    """Keys from --key-file (repeatable) or LEDGER_HMAC_KEY_FILE."""
    paths = list(key_files or [])
    if not paths and os.environ.get(keymod.KEY_ENV):
        paths = [Path(os.environ[keymod.KEY_ENV])]
    return tuple(keymod.load_key_file(p) for p in paths)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (never shows key material).")] = False,
) -> None:
    _state["debug"] = debug


KeyFiles = Annotated[
    list[Path] | None,
    typer.Option(
        "--key-file", help="HMAC key file (64 hex chars); repeat for rotated keys. Env: LEDGER_HMAC_KEY_FILE."
    ),
]


@app.command()
@guarded
def verify(
    paths: Annotated[list[Path], typer.Argument(help="Session files or directories.", show_default=False)],
    key_file: KeyFiles = None,
    allow_unsealed: Annotated[
        bool,
        typer.Option("--allow-unsealed", help="Accept a live or crashed session (reports up to where it is signed)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", min=0, help="Worker processes for large files (0 = one per core).")
    ] = 0,
) -> None:
    """Prove session files are intact; name the first bad line when they are not."""
    policy = Policy(keys=load_keys(key_file), allow_unsealed=allow_unsealed, jobs=jobs)
    report = verify_path(paths, policy)
    if as_json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=None) + "\n")
    else:
        render_verify(report, policy)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_EVIDENCE)


def render_verify(report: VerifyReport, policy: Policy) -> None:
    console = _err_console()
    for f in report.files:
        console.print(_verify_line(f, policy))
        for note in f.notes:
            console.print(f"  note: {escape(note)}")
    n_ok = sum(f.ok for f in report.files)
    events = sum(f.events for f in report.files)
    verdict = "[green]OK[/green]" if report.ok else "[red]FAIL[/red]"
    sig = "HMAC signatures verified" if policy.keys else "signatures NOT checked (no --key-file)"
    console.print(f"{verdict}: {n_ok}/{len(report.files)} files, {events} events; {sig}")


def _verify_line(f: FileReport, policy: Policy) -> str:
    # Paths and details quote bytes from the file: never let them be read as markup.
    path = escape(f.path)
    if f.first_error is not None:
        e = f.first_error
        where = f"line {e.line}" if e.line is not None else "file"
        return f"[red]FAIL[/red] {path}: {where}: {e.reason}: {escape(e.detail)}"
    state = f"sealed ({escape(f.seal_reason or '')})" if f.sealed else f"UNSEALED, signed through size {f.signed_size}"
    torn = f", torn tail of {f.torn_tail_bytes} bytes not verified" if f.torn_tail_bytes else ""
    return f"[green]PASS[/green] {path}: {f.events} events, {f.checkpoints} checkpoints, {state}{torn}"


@app.command()
@guarded
def keygen(
    hmac_file: Annotated[Path, typer.Option("--hmac", help="Write a new 32-byte HMAC key here (mode 0600).")],
) -> None:
    """Create a key file. Prints the key id, never the key."""
    kid = keymod.write_key_file(hmac_file)
    print(f"wrote {hmac_file} (key id {kid})", file=sys.stderr)
    print(kid)


@app.command()
@guarded
def demo(
    directory: Annotated[Path, typer.Argument(help="Where the demo keeps its key and ledger.")] = Path("demo-out"),
    seconds: Annotated[float, typer.Option(min=0.5, max=600, help="How long clients send traffic.")] = 3.0,
    clients: Annotated[int, typer.Option(min=1, max=200, help="Concurrent proxy clients.")] = 6,
) -> None:
    """Run a small asyncio TCP proxy on 127.0.0.1 with an embedded writer, then verify."""
    from .demo import run_demo

    result = run_demo(directory, seconds=seconds, clients=clients)
    console = _err_console()
    table = Table(title=f"ledger demo: {result.ledger_dir}", show_header=False)
    table.add_row("proxy connections", str(result.connections))
    table.add_row("bytes proxied", f"{result.bytes_proxied:,}")
    table.add_row("anomalies recorded", str(result.anomalies))
    table.add_row("events written", str(result.stats.get("events", 0)))
    table.add_row("sessions", str(result.stats.get("sessions", 0)))
    table.add_row("dropped", str(sum(result.stats.get("dropped", {}).values())))
    table.add_row("key file", f"{result.key_file} (key id {keymod.key_id(keymod.load_key_file(result.key_file))})")
    console.print(table)
    report = result.report
    render_verify(report, Policy(keys=(b"x",)))
    console.print(f"try: ledger verify --key-file {result.key_file} {result.ledger_dir}")
    raise typer.Exit(EXIT_OK if report.ok else EXIT_EVIDENCE)


# ---- tail ----------------------------------------------------------------------------

_TAIL_STYLES = {
    "capture": "cyan",
    "upload": "blue",
    "deletion": "red",
    "session": "bold magenta",
    "checkpoint": "green",
    "other": "",
}


def _tail_stop_fd() -> int | None:
    """stdout when it is a pipe or socket: `tail -f | head` stops once head has gone."""
    import stat

    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return None
    return fd if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else None


def _tail_event_text(ev, multi: bool):
    from rich.text import Text

    from .tail import clean, family, summary

    t = Text()
    if ev.ts is None:
        t.append("?                  not a v1 line: ", style="dim")
        t.append(summary(ev))
        return t
    t.append(f"{ev.ts[5:10]} {ev.ts[11:23]}", style="dim")
    if multi:
        t.append(f" {clean(ev.namespace)}", style="bold")
    t.append(f" {ev.seq:>6} ")
    t.append(f"{clean(ev.kind):<18}", style=_TAIL_STYLES[family(ev.kind)])
    t.append(" ")
    t.append(summary(ev))
    return t


def _tail_verified_text(v) -> str:
    if v.keys:
        sig = f"HMAC signatures verified ({v.keys} key{'s' if v.keys > 1 else ''})"
    else:
        sig = "signatures NOT checked (no --key-file)"
    where = f"{v.namespace}/{v.session}"
    if v.whole:
        return f"verified {where} whole: seq 0-{v.lines - 1}, {v.checkpoints} checkpoints, sealed; {sig}"
    if v.lines == 0:
        return f"verifying {where} from seq 0 as it is written; {sig}"
    sealed = ", sealed" if v.sealed else ""
    return (
        f"verified {where} from seq 0: seq 0-{v.lines - 1} ({v.checkpoints} checkpoints{sealed}); "
        f"each new line is checked from seq {v.lines}; {sig}"
    )


def _tail_flush(out) -> None:
    try:
        out.flush()
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        _quiet_broken_pipe()


@app.command()
@guarded
def tail(
    path: Annotated[
        Path, typer.Argument(help="A session file, a namespace directory or a root directory.", show_default=False)
    ],
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
        str | None, typer.Option("--since", help="Only events at or after TIME: 10m, 2h, 1d or RFC 3339.")
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
    poll: Annotated[bool, typer.Option("--poll", hidden=True, help="Poll instead of using inotify.")] = False,
) -> None:
    """Print the last events of a ledger; follow it live with -f, verifying as it goes with --verify."""
    import io
    from contextlib import closing

    from rich.text import Text

    from .errors import UsageError
    from .tail import IDLE, Notice, SessionChange, TailEvent, TailOptions, Verified, parse_since, target_kind
    from .tail import follow as follow_path

    if key_file and not check:
        raise UsageError("--key-file needs --verify")
    opts = TailOptions(
        lines=10 if lines is None and since is None else lines,
        follow=follow,
        kinds=tuple(kind or ()),
        since=parse_since(since) if since is not None else None,
        namespace=namespace,
        verify=check,
        keys=load_keys(key_file) if check else (),
        poll=True if poll else None,
        stop_fd=_tail_stop_fd() if follow else None,
    )
    multi = namespace is None and target_kind(path) == "root"
    # Our own buffer on fd 1 (even under PYTHONUNBUFFERED): one write() per batch, flushed when idle.
    out = io.BufferedWriter(io.FileIO(sys.stdout.fileno(), "wb", closefd=False), 1 << 16)
    plain = bool(os.environ.get("NO_COLOR"))  # no colour, and no bold or dim either
    console = Console(
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
    except KeyboardInterrupt:
        _tail_flush(out)
        raise typer.Exit(EXIT_OK) from None
    except EvidenceError as exc:
        _tail_flush(out)
        err.print(Text(f"ledger: VERIFY FAILED: {exc}", style="bold red"))
        raise typer.Exit(EXIT_EVIDENCE) from None
    _tail_flush(out)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        _quiet_broken_pipe()
        sys.exit(0)


if __name__ == "__main__":
    main()
