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

import enum
import functools
import json
import os
import sys
from typing import Annotated

import typer

from ..errors import EvidenceError, LedgerError
from .render import _quiet_broken_pipe, _write_quietly

EXIT_OK, EXIT_EVIDENCE, EXIT_ERROR = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT


class Outcome(enum.Enum):
    """What a command found, as it returns it; ``guarded`` turns it into the exit code."""

    HOLDS = "holds"  # everything checked holds (a command returning None means this too)
    EVIDENCE = "evidence"  # an evidence problem was found and reported
    INCOMPLETE = "incomplete"  # the job was left undone, the evidence intact (reported)


def outcome_of(ok: bool) -> Outcome:
    return Outcome.HOLDS if ok else Outcome.EVIDENCE


_EXIT_FOR = {Outcome.HOLDS: EXIT_OK, Outcome.EVIDENCE: EXIT_EVIDENCE, Outcome.INCOMPLETE: EXIT_ERROR}

app = typer.Typer(
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
    pretty_exceptions_enable=False,
    # Help texts are plain text: "s3://bucket/prefix[/namespace]" is not rich markup.
    rich_markup_mode=None,
    no_args_is_help=True,
    help="Tamper-evident evidence ledger.",
)
_state = {"debug": False}


class CommandFailed(Exception):
    """A command's own finding that ends it with one error line and ``outcome``'s exit code;
    ``report`` (plain data) goes into the --json object beside the error."""

    def __init__(self, message: str, outcome: Outcome, report: dict | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.report = report or {}


def fail(message: str, code: int = EXIT_ERROR, as_json: bool = False, report: dict | None = None) -> typer.Exit:
    """Print one diagnostic line to stderr (and, for --json, one object on stdout) and
    return the Exit to raise."""
    message = " ".join(str(message).split("\n"))
    if as_json:
        obj = {**(report or {}), "ok": False, "error": message, "exit_code": code}
        _write_quietly(sys.stdout, json.dumps(obj) + "\n")
    _write_quietly(sys.stderr, f"ledger: error: {message}\n")
    return typer.Exit(code)


# Commands whose --json is a stream of stored lines (NDJSON), not one object: an error
# there is the stderr line alone.
_NDJSON_COMMANDS = frozenset({"tail"})


def guarded(fn):
    """Map what a command returns (an Outcome) and the errors it raises to one stderr line
    and an exit code: the one place that decides exit codes."""

    one_object = fn.__name__ not in _NDJSON_COMMANDS

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json")) and one_object
        try:
            outcome = fn(*args, **kwargs)
        except typer.Exit:
            raise
        except CommandFailed as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), _EXIT_FOR[exc.outcome], as_json, exc.report) from None
        except EvidenceError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), EXIT_EVIDENCE, as_json) from None
        except LedgerError as exc:
            if _state["debug"]:
                raise
            raise fail(str(exc), EXIT_ERROR, as_json) from None
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(0) from None
        except OSError as exc:
            if _state["debug"]:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}", EXIT_ERROR, as_json) from None
        except Exception as exc:  # a bug: still one line, no locals, no traceback
            if _state["debug"]:
                raise
            raise fail(
                f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug)", EXIT_ERROR, as_json
            ) from None
        code = _EXIT_FOR[outcome or Outcome.HOLDS]
        if code != EXIT_OK:
            raise typer.Exit(code)

    return wrapper


def version_text() -> str:
    """``ledger VERSION`` and which verify loop runs: the compiled helper or the pure-Python
    reference (no C compiler at build time, or LEDGER_PURE_PYTHON set)."""
    from .. import __version__

    try:
        from .. import _speedups  # noqa: F401
    except ImportError:
        loop = "pure-Python verify loop (ledger._speedups not built)"
    else:
        loop = (
            "pure-Python verify loop (LEDGER_PURE_PYTHON is set)"
            if os.environ.get("LEDGER_PURE_PYTHON")
            else "compiled verify loop (ledger._speedups)"
        )
    return f"ledger {__version__}, {loop}"


def _show_version(value: bool) -> None:
    if value:
        _write_quietly(sys.stdout, version_text() + "\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks (never shows key material).")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and which verify loop runs."
        ),
    ] = False,
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    """The console script: every way out of a command is one of README's exit codes.

    typer runs in non-standalone mode so that click's own errors (an unknown option, a
    missing argument) become the one ``ledger: error: ...`` line (exit 2) instead of a
    usage box, Ctrl-C anywhere is 130 without a traceback, and a reader that has gone is
    never the tamper code.
    """
    from typer import _click as click  # typer >= 0.2x vendors click: its exceptions, not click's

    try:
        try:
            rv = app(args=argv, prog_name="ledger", standalone_mode=False)
            code = rv if isinstance(rv, int) else EXIT_OK
        except click.exceptions.NoArgsIsHelpError as exc:  # `ledger`, `ledger prove`: the help
            _write_quietly(sys.stdout, exc.ctx.get_help() + "\n" if exc.ctx else "")
            code = EXIT_ERROR
        except click.ClickException as exc:  # usage: unknown option, missing argument, bad value
            args = sys.argv[1:] if argv is None else argv
            fail(exc.format_message(), EXIT_ERROR, "--json" in args and not _NDJSON_COMMANDS.intersection(args[:2]))
            code = EXIT_ERROR
        except (typer.Abort, KeyboardInterrupt):
            code = EXIT_INTERRUPTED
        except BrokenPipeError:
            _quiet_broken_pipe()
            code = EXIT_OK
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            _quiet_broken_pipe()
        except (ValueError, OSError):
            pass
    except KeyboardInterrupt:  # a second Ctrl-C while finishing
        code = EXIT_INTERRUPTED
    sys.exit(code)


# The commands register themselves on ``app`` when imported (they need ``app`` and ``guarded`` above).
from . import checks, cold_tier, demo, hot_tier, tailing  # noqa: E402, F401
from .options import load_keys  # noqa: E402, F401  (importable from ledger.cli as before)
from .render import render_verify  # noqa: E402, F401
