"""``bga alerts``: run the alert sender, send a test message, show the delivery history."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.table import Table

from graph import alerts, cli_common, scheduler
from graph.cli_common import DbOption, console, err
from state.api import SharedState
from state.redact import redact
from state.settings import database_url

alerts_app = cli_common.Typer(help="Alert delivery: webhook, Slack and e-mail channels "
                              "(alerts.channels.* in the configuration).", no_args_is_help=True)


@alerts_app.command("run")
def run_command(db: DbOption = None,
                interval: Annotated[float, typer.Option(
                    help="Seconds between passes", min=0.05, max=3600)] = 1.0) -> None:
    """Deliver alerts until Ctrl-C / SIGTERM (one sender per database; others stand by)."""
    url = database_url(db)

    async def go() -> int:
        stop = asyncio.Event()
        scheduler.install_signal_handlers(stop)
        async with SharedState.open(url, producer=alerts.SENDER) as shared:
            console.print(f"alert sender running on {redact(url)}; Ctrl-C stops it")
            return await alerts.run(shared, shared.backend.outbox(), stop=stop,
                                    interval_s=interval,
                                    log=lambda line: err.print(line, highlight=False))

    passes = cli_common.run(go())
    console.print(f"alert sender stopped after {passes} passes")


@alerts_app.command("test")
def test_command(channel: Annotated[str, typer.Argument(help="Channel name")],
                 db: DbOption = None) -> None:
    """Send a test message to CHANNEL now; exit 1 if it was not delivered."""
    url = database_url(db)

    async def go() -> alerts.Outcome:
        async with SharedState.open(url, producer=alerts.SENDER, must_exist=True) as shared:
            return await alerts.Sender(shared, shared.backend.outbox()).test(channel)

    outcome = cli_common.run(go())
    if not outcome.ok:
        err.print(f"[red]not delivered[/red] to {channel}: {outcome.error}", highlight=False)
        raise typer.Exit(1)
    console.print(f"test message delivered to {channel}")


@alerts_app.command("history")
def history_command(db: DbOption = None,
                    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
                    as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The newest messages: channel, status, tries, last error, what they carried."""
    url = database_url(db)

    async def go() -> list[dict]:
        async with SharedState.open(url, producer=alerts.SENDER, must_exist=True,
                                    read_only=True) as shared:
            return await shared.backend.outbox().history(limit)

    rows = cli_common.run(go())
    if as_json:
        console.print_json(json.dumps(rows, default=str))
        return
    table = Table(title="alert messages")
    for col in ("key", "channel", "alerts", "status", "tries", "last error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["key"], r["channel"], str(r["alerts"]), r["status"],
                      str(r["attempts"]), (r["last_error"] or "")[:60])
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``bga alerts ...`` to the main command line."""
    app.add_typer(alerts_app, name="alerts")
