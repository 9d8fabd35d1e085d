"""The demo command: a small proxy with an embedded writer, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .. import keys as keymod
from . import Outcome, app, guarded, outcome_of
from .render import _batches_table, _captures_table, _err_console, render_verify


@app.command()
@guarded
def demo(
    directory: Annotated[Path, typer.Argument(help="Where the demo keeps its key, ledger and cold store.")] = Path(
        "demo-out"
    ),
    seconds: Annotated[float, typer.Option(min=0.5, max=600, help="How long clients send traffic.")] = 3.0,
    clients: Annotated[int, typer.Option(min=1, max=200, help="Concurrent proxy clients.")] = 6,
    store: Annotated[
        str | None, typer.Option("--store", help="Cold store URL (default: file://DIRECTORY/cold).")
    ] = None,
) -> Outcome:
    """Run a small asyncio TCP proxy on 127.0.0.1 with an embedded writer, capture, archive, verify."""
    from ..demo import run_demo

    result = run_demo(directory, seconds=seconds, clients=clients, store_url=store)
    console = _err_console()
    table = Table(title=f"ledger demo: {escape(str(result.ledger_dir))}", show_header=False)
    table.add_row("proxy connections", str(result.connections))
    table.add_row("bytes proxied", f"{result.bytes_proxied:,}")
    table.add_row("anomalies recorded", str(result.anomalies))
    table.add_row("captures", escape(result.capture_note))
    table.add_row("events written", str(result.stats.get("events", 0)))
    table.add_row("dropped", str(sum(result.stats.get("dropped", {}).values())))
    table.add_row("cold store", escape(result.store_url))
    if result.tiers is not None:
        t = result.tiers
        table.add_row("tier boundary", escape(f"newest archived {t.newest_archived}, oldest hot {t.oldest_hot}"))
        table.add_row("tiers join", ("[green]yes[/green] " if t.joined else "[red]NO[/red] ") + escape(t.detail))
    table.add_row(
        "key file", f"{escape(str(result.key_file))} (key id {keymod.key_id(keymod.load_key_file(result.key_file))})"
    )
    console.print(table)
    if result.captures:
        console.print(_captures_table(result.captures, "pointer view (captures)", console.width))
    if result.batches:
        console.print(_batches_table(result.batches))
    console.print("[bold]hot tier[/bold]")
    render_verify(result.report)
    if result.cold_report is not None:
        console.print("[bold]cold tier[/bold]")
        render_verify(result.cold_report)
    console.print(f"try: ledger verify --key-file {escape(str(result.key_file))} {escape(str(result.ledger_dir))}")
    ok = result.report.ok and (result.cold_report is None or result.cold_report.ok)
    return outcome_of(ok)
