"""``bga worker`` and ``bga db upgrade``: running the system as many processes on many hosts."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from graph import cli_common, scheduler, worker
from graph.cli_common import DbOption, console
from nodes.profile_import.store import ProfileStore, profiles_location
from state.api import SharedState
from state.queries import config_of
from state.redact import redact
from state.settings import database_url


def register(app: typer.Typer) -> None:
    """Add ``bga worker`` and ``bga db ...`` to the main command line."""
    db_app = cli_common.Typer(help="The state database's schema.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @app.command("worker")
    def worker_cmd(
        agents: Annotated[str, typer.Option(
            "--agents", help="Agents this process runs: NAME[,NAME...] from the config")],
        db: DbOption = None,
        steps: Annotated[int | None, typer.Option(
            help="Stop after each agent has run this many steps")] = None,
    ) -> None:
        """Run chosen agents in this process (any host that reaches the database).

        Steps are reported through the SharedState API, one transaction per step; while this
        worker's heartbeats are fresh the coordinator leaves these agents to it."""
        url = database_url(db)

        async def go() -> worker.WorkerReport:
            stop = asyncio.Event()
            scheduler.install_signal_handlers(stop)
            async with SharedState.open(url, producer="worker", must_exist=True) as shared:
                names = worker.parse_agents(agents, config_of(await shared.read()))
                ident = worker.worker_identity()["worker"]
                console.print(f"worker {ident} running {', '.join(names)} on {redact(url)}; "
                              "Ctrl-C stops it after the current steps", highlight=False)
                return await worker.run(shared, names, stop=stop, notify=console.print,
                                        max_steps=steps)

        report = cli_common.run(go())
        done = ", ".join(f"{a} {n}" for a, n in report.steps.items())
        console.print(f"worker stopped cleanly; steps: {done}", highlight=False)

    @db_app.command("upgrade")
    def upgrade(db: DbOption = None) -> None:
        """Create or migrate every table the system uses (idempotent; safe to run from
        several processes at once). Opening the database does the same on first use."""
        url = database_url(db)

        async def go() -> None:
            async with SharedState.open(url, producer="cli"):
                pass  # setup() ran the state's migrations (trace store included) under its lock
            # the importer's profiles database has its own append-only migrations
            store = await asyncio.to_thread(ProfileStore.open, profiles_location(url))
            store.close()

        cli_common.run(go())
        console.print(f"schema of {redact(url)} is up to date", highlight=False)
