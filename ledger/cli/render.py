"""Rendering: the consoles, the verify report and summary, the tables, JSON, tail's lines.

Everything a command prints is shaped here; the commands decide what to print.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import format as fmt
from ..verify import FileReport, VerifyReport

if TYPE_CHECKING:
    from ..tail import TailEvent


def _wide(stream) -> int | None:
    """Terminal width on a TTY; otherwise wide enough that tables never squeeze ids."""
    try:
        return None if stream.isatty() else 200
    except (AttributeError, ValueError):
        return 200


class _Console(Console):
    """rich's Console, except that a closed pipe is not the tamper code.

    rich's ``on_broken_pipe`` raises ``SystemExit(1)``, and 1 means an evidence problem
    here. Once the reader has gone, the rest of the output goes to /dev/null and the
    command ends with its own exit code: 0 on intact evidence, 1 only on a real finding.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _quiet_broken_pipe(sys.stderr if self.stderr else sys.stdout)


def _out_console() -> Console:
    return _Console(highlight=False, soft_wrap=True, width=_wide(sys.stdout))


def _err_console() -> Console:
    return _Console(
        width=_wide(sys.stderr),
        stderr=True,
        highlight=False,
        soft_wrap=True,
        no_color=bool(os.environ.get("NO_COLOR")) or None,
    )


def _write_quietly(stream, text: str) -> None:
    """Write and flush; a reader that has gone is not an error of ours."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        _quiet_broken_pipe(stream)
    except (ValueError, OSError):
        pass


def _quiet_broken_pipe(stream=None) -> None:
    """Point the stream's descriptor (stdout by default) at /dev/null: the reader has gone,
    and Python would complain again when flushing it at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (stream or sys.stdout).fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _print_json(obj) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def render_verify(report: VerifyReport) -> None:
    """One line per file (and its notes), then a closing line saying, per file, what was
    checked and what failed: taken from the reports, never from what the caller hoped."""
    console = _err_console()
    for f in report.files:
        console.print(_verify_line(f))
        for note in f.notes:
            console.print(f"  note: {escape(note)}")
    for c in report.captures:
        console.print(_capture_line(c))
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    console.print(_verify_summary(report))


_SIGS_UNCHECKED = "signatures NOT checked (no --key-file/--pubkey/--fs-seed)"


def _what_held(f: FileReport) -> str:
    """What was checked of a file that held, in words."""
    state = "sealed" if f.sealed else f"UNSEALED (signed through size {f.signed_size})"
    if f.signatures != "verified":
        sigs = _SIGS_UNCHECKED
    elif f.signers:
        sigs = f"signatures verified (by {', '.join(f.signers)})"
    else:
        sigs = "no checkpoint to sign"
    return f"chain, {f.checkpoints} checkpoint roots, {state}; {sigs}"


def _what_failed(f: FileReport) -> str:
    e = f.first_error
    where = f"line {e.line}" if e.line is not None else "file"
    held = f"; the {f.events} lines before it held" if e.line and f.events else ""
    sigs = "" if f.signatures == "verified" else f"; {_sigs_unchecked(e)}"
    return f"{escape(Path(f.path).name)}: FAILED at {where} ({e.reason}){held}{sigs}"


# Set by the verify command: which kinds of key it was given.
KEYS_GIVEN = {"text": ""}


def keys_given(policy) -> str:
    kinds = [
        ("HMAC key", policy.keys),
        ("Ed25519 verifier key", policy.verifiers),
        ("forward-secure seed", policy.fs_seeds),
    ]
    return ", ".join(name for name, given in kinds if given)


def _sigs_unchecked(e) -> str:
    """A file that failed as a whole (missing, not gzip, empty) had no line to check a
    signature on: say so, and which keys were given, rather than blame missing options."""
    given = KEYS_GIVEN["text"]
    if e.line is None and given:
        return f"signatures not reached: no line was read ({given} given)"
    return _SIGS_UNCHECKED


def _verify_summary(report: VerifyReport) -> str:
    """``OK|FAIL: k/n files intact, E events: <per file: what held, or where and why it failed>``.
    Files that held alike are grouped (named when few); every failure is named."""
    files = report.files
    held: dict[str, list[str]] = {}
    for f in files:
        if f.ok:
            held.setdefault(_what_held(f), []).append(f.path)
    parts = []
    for what, paths in held.items():
        who = ", ".join(escape(Path(p).name) for p in paths) if len(paths) <= 3 else f"{len(paths)} files"
        parts.append(f"{who}: {escape(what)}")
    parts += [_what_failed(f) for f in files if not f.ok]
    if report.captures:
        good = sum(c.verdict == "ok" for c in report.captures)
        bad = sum(not c.ok for c in report.captures)
        unchecked = len(report.captures) - good - bad
        parts.append(
            f"{good}/{len(report.captures)} captures intact"
            + (f", {bad} FAILED" if bad else "")
            + (f" ({unchecked} not checked)" if unchecked else "")
        )
    verdict = "[green]OK[/green]" if report.ok else "[red]FAIL[/red]"
    n_ok = sum(f.ok for f in files)
    events = sum(f.events for f in files)
    return f"{verdict}: {n_ok}/{len(files)} files intact, {events} events: " + "; ".join(parts or ["nothing verified"])


def _capture_line(c) -> str:
    what = escape(f"capture {c.capture_id} {c.where}" if c.capture_id else c.where)
    if c.verdict == "ok":
        return f"[green]OK[/green] {what}: {c.found_bytes:,} bytes match its capture.sealed"
    label = "[red]FAIL[/red]" if not c.ok else "[yellow]NOT CHECKED[/yellow]"
    return f"{label} {what}: {c.verdict}: {escape(c.detail)}"


def _verify_line(f: FileReport) -> str:
    # Paths and details quote bytes from the file: never let them be read as markup.
    path = escape(f.path)
    if f.first_error is not None:
        e = f.first_error
        where = f"line {e.line}" if e.line is not None else "file"
        return f"[red]FAIL[/red] {path}: {where}: {e.reason}: {escape(e.detail)}"
    state = f"sealed ({escape(f.seal_reason or '')})" if f.sealed else f"UNSEALED, signed through size {f.signed_size}"
    torn = f", torn tail of {f.torn_tail_bytes} bytes not verified" if f.torn_tail_bytes else ""
    return f"[green]PASS[/green] {path}: {f.events} events, {f.checkpoints} checkpoints, {state}{torn}"


# Below this many columns the captures table leaves out its sha256 prefix (--json has it whole).
_NARROW = 100


def _whole_column(table: Table, name: str, values: list[str]) -> None:
    """A column never wrapped or shortened (an id, a state): as wide as its longest value."""
    table.add_column(name, no_wrap=True, overflow="fold", min_width=max([len(name), *map(len, values)]))


def _captures_table(views, title: str = "captures", width: int | None = None) -> Table:
    """Readable at 80 columns: other columns wrap (fold, never "…") and sha256 goes when narrow."""
    views = list(views)
    narrow = width is not None and width < _NARROW
    table = Table(title=title)
    _whole_column(table, "capture id", [v.capture_id for v in views])
    table.add_column("cn", overflow="fold")
    table.add_column("ip", overflow="fold")
    _whole_column(table, "state", [v.state for v in views])
    for col in ("local", "bytes", *(() if narrow else ("sha256",))):
        table.add_column(col, no_wrap=col == "sha256", overflow="fold")
    for v in views:
        row = [escape(v.capture_id), escape(v.cn), escape(v.ip), v.state, "yes" if v.local else "no", f"{v.bytes:,}"]
        table.add_row(*row, *(() if narrow else (v.sha256[:12],)))
    return table


def _batches_table(batches, width: int | None = None) -> Table:
    """Fits 80 columns whole (``width`` is taken for the same call as the captures table)."""
    batches = list(batches)
    table = Table(title="archive batches (--json for keys)")
    _whole_column(table, "session", [b.session for b in batches])
    table.add_column("events", overflow="fold")
    _whole_column(table, "state", [b.state for b in batches])
    for col in ("local", "objects", "bytes"):
        table.add_column(col, overflow="fold")
    for b in batches:
        table.add_row(
            escape(b.session),
            str(b.events),
            b.state,
            "deleted" if b.local_deleted else "kept",
            str(len(b.objects)),
            f"{sum(o.bytes for o in b.objects):,}",
        )
    return table


# ---- tail ---------------------------------------------------------------------------------

# Presentation of tail's events for a terminal: a one-line summary, a colour family and
# escaped control characters (moved here from ledger.tail, which only yields items).

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FAMILIES = {
    "capture": "capture",
    "upload": "upload",
    "deletion": "deletion",
    "delete": "deletion",
    "session": "session",
    "checkpoint": "checkpoint",
}
_TAIL_STYLES = {
    "capture": "cyan",
    "upload": "blue",
    "deletion": "red",
    "session": "bold magenta",
    "checkpoint": "green",
    "other": "",
}


def family(kind: str | None) -> str:
    """capture, upload, deletion, session, checkpoint or other (for colouring)."""
    if not kind:
        return "other"
    if kind == fmt.KIND_CHECKPOINT:
        return "checkpoint"
    return _FAMILIES.get(kind.split(".", 1)[0].split(":", 1)[0], "other")


def clean(text: str) -> str:
    """Control characters shown escaped: data must not drive the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _short(value: object, width: int = 60) -> str:
    s = value if isinstance(value, str) else msgspec.json.encode(value).decode("utf-8", "replace")
    s = clean(s)
    return s if len(s) <= width else s[: width - 1] + "…"


def summary(ev: TailEvent, width: int = 240) -> str:
    """A one-line summary of an event's data."""
    if ev.data is None:
        return _short(ev.raw.decode("utf-8", "replace").rstrip("\n"), width)
    try:
        data = msgspec.json.decode(ev.data)
    except msgspec.DecodeError:
        return _short(ev.data.decode("utf-8", "replace"), width)
    if not isinstance(data, dict):
        return _short(data, width)
    if ev.kind == fmt.KIND_OPENED:
        return _short(" · ".join(_opened_parts(data)), width)
    if ev.kind in fmt.SIGNED_KINDS:
        return _short(" · ".join(_signed_parts(ev.kind, data)), width)
    text = " ".join(f"{clean(str(k))}={_short(v)}" for k, v in data.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def _opened_parts(data: dict) -> list[str]:
    prev = data.get("prev")
    parts = [f"session {_short(data.get('session'))}"]
    if isinstance(prev, dict):
        parts.append(f"prev {_short(prev.get('session'))} ({_short(prev.get('size'))} lines)")
    else:
        parts.append("first session of the namespace")
    if data.get("quarantined"):
        parts.append(f"QUARANTINED {_short(data['quarantined'])}: {_short(data.get('quarantine_reason'), 120)}")
    return parts


def _signed_parts(kind: str, data: dict) -> list[str]:
    parts = []
    if kind == fmt.KIND_SEALED:
        parts.append(f"reason {_short(data.get('reason'))}")
    parts.append(f"size {_short(data.get('size'))}")
    parts.append(f"root {_short(str(data.get('root', ''))[:16])}…")
    keys = [_short(s.get("key"), 16) for s in data.get("sigs") or () if isinstance(s, dict)]
    parts.append(f"signed by {', '.join(keys) or 'nobody'}")
    dropped = fmt.dropped_total(data.get("dropped")) if _is_dropped(data.get("dropped")) else 0
    if dropped:
        parts.append(f"DROPPED {dropped}")
    return parts


def _is_dropped(d: object) -> bool:
    return isinstance(d, int) or (isinstance(d, dict) and all(isinstance(v, int) for v in d.values()))


def _tail_event_text(ev: TailEvent, multi: bool) -> Text:
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


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n > 1 else ''}"


def _tail_signatures(v) -> str:
    """Which kinds of trusted key the signatures were checked with (HMAC alone: as before --pubkey)."""
    if not (v.verifiers or v.fs_seeds):
        return f"HMAC signatures verified ({_count(v.keys, 'key')})" if v.keys else _SIGS_UNCHECKED
    kinds = [(v.keys, "HMAC key"), (v.verifiers, "Ed25519 verifier key"), (v.fs_seeds, "forward-secure seed")]
    return f"signatures verified ({', '.join(_count(n, what) for n, what in kinds if n)})"


def _tail_verified_text(v) -> str:
    sig = _tail_signatures(v)
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
