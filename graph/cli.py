"""``bga``: the command line of the background-agents system.

This module makes the app and its state commands (status, export, restore, tick, run, demo,
dashboard, metrics); ``graph.cli_import``, ``graph.cli_bridge`` and ``graph.cli_cluster`` add
theirs through ``register``. What they all share (``--db``, consoles, error policy) is
``graph.cli_common``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from graph import (
    cli_alerts,
    cli_auth,
    cli_bridge,
    cli_cluster,
    cli_common,
    cli_import,
    runner,
    scheduler,
)
from graph.cli_common import DbOption, console, err
from graph.demo import sample_traffic, seed_sample_data
from state import policy
from state.api import SharedState
from state.queries import is_internal_series
from state.redact import redact
from state.settings import database_url, failover_s

app = cli_common.Typer(help="Background Agents: a LangGraph-native runtime for background "
                             "agents.", no_args_is_help=True, add_completion=False)
_run = cli_common.run


@app.callback()
def main(debug: Annotated[bool, typer.Option(
        "--debug", help="Show the traceback of a failure (also BGA_DEBUG=1)")] = False) -> None:
    """Background Agents: a LangGraph-native runtime for background agents."""
    cli_common.set_debug(debug)


def _age(ts: float | None) -> str:
    if ts is None:
        return "never"
    secs = max(0, time.time() - ts)
    return f"{secs:.0f} s ago" if secs < 120 else f"{secs / 60:.0f} min ago"


def _num(value: float | None) -> str:
    """A number in at most ~6 characters: 3 significant digits (within 0.5 %, finer than the
    percentiles' own 2 %), with k/M/G from 10,000 up: 23,415 -> ``23.4k``."""
    if value is None:
        return "-"
    text = f"{value:.3g}"
    if abs(float(text)) < 1e3:
        return text
    if abs(value) < 9999.5:  # 1,006 as 1006, not 1.01e+03
        return f"{value:.0f}"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(float(text)) >= scale:  # after rounding: 999,999 is 1.00M, not 1e+03k
            return f"{float(text) / scale:.3g}{suffix}"
    return text


_VERDICT_STYLE = {"active": "green", "stale": "yellow", "dead": "red", "unknown": "dim",
                  "running": "green", "down": "bold red", "never": "yellow"}


def _scheduler_line(sched: dict) -> str:
    every = f"every {sched['expected_interval_s']:g} s"
    if sched["verdict"] == "never":
        return "scheduler: [yellow]no tick yet[/yellow]: start it with `bga run`"
    age = _age(sched["last_tick_at"])
    if sched["verdict"] == "down":
        return (f"scheduler: [bold red]DOWN[/bold red], last tick {age} ({every}): "
                "start `bga run`")
    by = f", led by {sched['coordinator']}" if sched.get("coordinator") else ""
    return f"scheduler: [green]running[/green], last tick {age} ({every}{by})"


def print_status(summary: dict, agents: list[dict], perf: dict,
                 processes: list[dict] | None = None, *, show_all: bool = False) -> None:
    """The status at 80 columns: scheduler and agents with one liveness verdict each, then
    the last hour's series grouped by agent (the system's own internal series only with
    ``show_all``)."""
    if summary.get("scheduler"):
        console.print(_scheduler_line(summary["scheduler"]))
    table = Table(title="Agents")
    for col in ("agent", "liveness", "status", "last heartbeat", "runs on"):
        table.add_column(col, overflow="fold")
    for a in agents:
        verdict = a.get("liveness") or "unknown"
        style = _VERDICT_STYLE.get(verdict, "")
        status = a["status"]
        if a.get("reported_status") and a["reported_status"] != status:
            status = f"{status} [dim](said {a['reported_status']})[/dim]"
        table.add_row(a["agent_id"], f"[{style}]{verdict}[/{style}]" if style else verdict,
                      status, _age(a["last_heartbeat"]), a["runs_on"])
    console.print(table)
    if processes:
        table = Table(title="Processes")
        for col in ("process", "role", "last seen", "agents"):
            table.add_column(col, overflow="fold")
        for p in processes:
            role = p["role"] + (", coordinator-only" if p["coordinator_only"] else "")
            table.add_row(p["process"], role, _age(p["last_seen"]), ", ".join(p["agents"]))
        console.print(table)
    globs = ((summary.get("config") or {}).get("rules") or {}).get("internal_series") or []
    shown = {name: s for name, s in perf["series"].items()
             if show_all or not is_internal_series(name, globs)}
    table = Table(title=f"Performance, last {perf['window_hours']:g} h, by agent")
    table.add_column("series", overflow="fold", ratio=1)
    for col in ("count", "p50", "p95", "p99"):
        table.add_column(col, justify="right", no_wrap=True)
    by_agent: dict[str, list[tuple[str, dict]]] = {}
    for s in shown.values():
        by_agent.setdefault(s["source_agent"], []).append((s["name"], s))
    for agent, rows in sorted(by_agent.items()):
        table.add_row(f"[bold]{agent}[/bold]", "", "", "", "")
        for name, s in rows:
            unit = f" {s['unit']}" if s.get("unit") and not name.endswith(f"_{s['unit']}") \
                else ""
            table.add_row(f"  {name}{unit}", str(s["count"]),
                          *(_num(s[k]) for k in ("p50", "p95", "p99")))
    console.print(table)
    hidden = len(perf["series"]) - len(shown)
    if hidden:
        console.print(f"[dim]{hidden} internal series hidden (the system's own traces): "
                      "--all[/dim]")
    ins = summary["insights"]
    errs = summary["error_patterns"]
    by_pri = ", ".join(f"{k} {v}" for k, v in ins["open_by_priority"].items() if v)
    console.print(f"insights: {ins['open']} open of {ins['total']}"
                  + (f" ({by_pri})" if by_pri else ""))
    console.print("insights by status: "
                  + ", ".join(f"{k} {v}" for k, v in ins["by_status"].items()))
    console.print(f"error patterns: {errs['total']} ({errs['events_1h']} events in the last hour)")
    stats = summary["stats"]
    console.print(f"events folded: {int(stats.get('events_folded', 0))}, "
                  f"pending in inbox: {summary['inbox']['pending']}, "
                  f"quarantined: {int(stats.get('quarantined', 0))}")
    console.print(f"ticks: {int(stats.get('ticks', 0))}, "
                  f"last tick: {_age(stats.get('last_tick_at'))}")


@app.command()
def status(db: DbOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
           show_all: Annotated[bool, typer.Option(
               "--all", help="Also list the system's own internal series")] = False) -> None:
    """Show the scheduler, agents (with liveness), metrics, insights and error patterns."""

    async def go() -> tuple[dict, list, dict, list]:
        async with SharedState.open(database_url(db), producer="cli", read_only=True,
                                     must_exist=True) as shared:
            return (await shared.get_system_state(), await shared.get_agents(),
                    await shared.get_performance_summary(hours=1),
                    await shared.get_processes())

    summary, agents, perf, processes = _run(go())
    if as_json:
        console.print_json(json.dumps({"system": summary, "agents": agents, "performance": perf,
                                       "processes": processes}))
    else:
        print_status(summary, agents, perf, processes, show_all=show_all)


@app.command()
def export(db: DbOption = None,
           output: Annotated[Path | None, typer.Option("-o", "--output", help="File")] = None
           ) -> None:
    """Write a JSON snapshot of the state (secrets redacted) to a file or stdout."""
    if output is not None:
        cli_common.writable_file(output)  # before reading anything

    async def go() -> dict:
        async with SharedState.open(database_url(db), producer="cli", read_only=True,
                                     must_exist=True) as shared:
            return await shared.export_state()

    text = json.dumps(_run(go()), indent=1, sort_keys=True)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")
        err.print(f"exported to {output}")


@app.command()
def restore(path: Path, db: DbOption = None,
            force: Annotated[bool, typer.Option(help="Replace a non-empty state")] = False) -> None:
    """Load a snapshot written by `bga export` into an empty database."""
    hint = "give a JSON file written by `bga export`"
    if path.is_dir():
        cli_common.fail(f"cannot read {path}: it is a directory", hint)
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        cli_common.fail(f"cannot read {path}: no such file", hint)
    except (OSError, ValueError) as exc:  # not UTF-8, not JSON, unreadable
        known = cli_common.describe(exc)
        cli_common.fail(f"cannot read {path}: {known or exc}", hint)

    async def go() -> None:
        async with SharedState.open(database_url(db), producer="cli") as shared:
            await shared.restore_state(document, force=force)

    _run(go())
    err.print(f"restored {path}")


@app.command()
def tick(db: DbOption = None) -> None:
    """Run one tick of the system graph now."""

    async def go() -> runner.TickReport:
        async with SharedState.open(database_url(db), producer="cli") as shared:
            return await runner.tick(shared, wait=30)

    report = _run(go())
    console.print(f"tick done in {report.duration_s * 1000:.0f} ms: folded "
                  f"{report.events_folded} events, pruned {report.checkpoints_pruned} checkpoints")


@app.command()
def run(db: DbOption = None,
        interval: Annotated[float | None, typer.Option(help="Seconds between ticks "
                                                        "(default: config ticker.interval_s)")]
        = None,
        demo: Annotated[bool, typer.Option(help="Write sample activity while running")] = False,
        ticks: Annotated[int | None, typer.Option(help="Stop after this many ticks")] = None,
        coordinator_only: Annotated[bool, typer.Option(
            help="Only coordinate: agents run in `bga worker` processes")] = False,
        failover: Annotated[float | None, typer.Option(
            "--failover-s", help="Seconds within which a standby takes over from a leader "
                                 "whose host died (default: $BGA_FAILOVER_S, then 15)")] = None,
        metrics_port: Annotated[int | None, typer.Option(
            help="Also serve Prometheus metrics on http://127.0.0.1:PORT/metrics")] = None,
        send_alerts: Annotated[bool, typer.Option(
            "--alerts/--no-alerts", help="Also deliver alerts, as `bga alerts run` does "
                                         "(one sender per database; others stand by)")] = True,
        ) -> None:
    """Run the scheduler: tick the system graph until Ctrl-C / SIGTERM.

    Several may run (on several hosts with PostgreSQL): one leads, the others stand by."""
    url = database_url(db)

    async def go() -> int:
        stop = asyncio.Event()
        scheduler.install_signal_handlers(stop)
        async with contextlib.AsyncExitStack() as stack:
            shared = await stack.enter_async_context(SharedState.open(
                url, producer="scheduler", failover_s=failover_s(failover)))
            if metrics_port is not None:  # reads the state like `bga metrics` does
                from graph import metrics
                bound = await stack.enter_async_context(metrics.serve(url, metrics_port))
                console.print(f"metrics: http://127.0.0.1:{bound}/metrics")
            sender = None
            if send_alerts:
                from graph import alerts
                sending = await stack.enter_async_context(SharedState.open(
                    url, producer=alerts.SENDER, failover_s=failover_s(failover)))
                sender = asyncio.create_task(alerts.run(
                    sending, sending.backend.outbox(), stop=stop, interval_s=interval or 1.0,
                    log=lambda line: err.print(line, highlight=False)))
            traffic = None
            if demo:
                if not await seed_sample_data(shared):
                    console.print("sample data: already in this database (written once); "
                                  "continuing the live sample traffic only")
                traffic = asyncio.create_task(sample_traffic(shared, stop))
            console.print(f"scheduler running on {redact(url)}; Ctrl-C stops it after the "
                          "current tick")
            console.print("dashboard: run `.venv/bin/bga dashboard` and open "
                          "http://127.0.0.1:8501")

            def show(report: runner.TickReport) -> None:
                console.print(f"tick: {report.duration_s * 1000:.0f} ms, folded "
                              f"{report.events_folded} events", highlight=False)

            n = await scheduler.run(shared, stop=stop, notify=console.print, interval_s=interval,
                                    max_ticks=ticks, on_tick=show,
                                    coordinator_only=coordinator_only)
            stop.set()
            for task in (traffic, sender):
                if task is not None:
                    await task
            return n

    n = _run(go())
    console.print(f"scheduler stopped cleanly after {n} ticks")


@app.command()
def demo(db: DbOption = None) -> None:
    """Write an hour of sample activity through the API, run a tick, show the result."""
    url = database_url(db)

    async def go() -> tuple[int, runner.TickReport, dict, list, dict]:
        async with SharedState.open(url, producer="demo") as shared:
            written = await seed_sample_data(shared)
            report = await runner.tick(shared, wait=30)
            return (written, report, await shared.get_system_state(), await shared.get_agents(),
                    await shared.get_performance_summary(hours=1))

    written, report, summary, agents, perf = _run(go())
    if written:
        console.print(f"wrote {written} events through the SharedState API to {redact(url)}; "
                      f"one tick folded {report.events_folded} of them in "
                      f"{report.duration_s * 1000:.0f} ms")
    else:
        console.print(f"the sample data is already in {redact(url)} (it is written once per "
                      f"database); one tick took {report.duration_s * 1000:.0f} ms")
    print_status(summary, agents, perf)
    console.print("\nNext: `.venv/bin/bga status`, `.venv/bin/bga export -o state.json`.")


@app.command("dashboard")
def dashboard_cmd(db: DbOption = None,
                  port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 8501) -> None:
    """Start the Streamlit dashboard on http://127.0.0.1:PORT (localhost only, no telemetry).

    A small front (``graph.dashboard_front``) listens on PORT and refuses any request whose
    Host or Origin is not an allowed name; Streamlit itself listens on an internal port."""
    import asyncio
    import os
    import signal
    import socket
    import subprocess

    from graph import dashboard_front

    url = database_url(db)
    hosts = policy.dashboard_hosts()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        internal = int(s.getsockname()[1])
    script = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(script),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.port", str(internal), "--server.headless", "true",
           "--client.toolbarMode", "minimal",
           # behind the front too: the websocket (all data and every edit) answers only to
           # these Host names, and only to same-origin or local pages (state.policy)
           "--server.enableCORS", "true", "--server.enableXsrfProtection", "true",
           *(arg for host in hosts for arg in ("--server.allowedHosts", host))]
    console.print(f"dashboard: http://127.0.0.1:{port} (state: {redact(url)}; answers to "
                  f"{', '.join(hosts)}); Ctrl-C stops it")
    proc = subprocess.Popen(cmd, env={**os.environ, "BGA_DATABASE_URL": url})
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())

    async def serve() -> int:
        server = await dashboard_front.start(port, internal, hosts)
        async with server:
            return await asyncio.to_thread(proc.wait)

    try:
        code = asyncio.run(serve())
    except OSError as exc:  # the port is taken
        proc.terminate()
        proc.wait(timeout=15)
        err.print(f"[red]error:[/red] cannot listen on 127.0.0.1:{port}: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # the child got the same SIGINT and is shutting down
        code = proc.wait(timeout=15)
    raise typer.Exit(0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code)


@app.command("metrics")
def metrics_cmd(db: DbOption = None,
                port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 9464) -> None:
    """Serve the state as Prometheus metrics on http://127.0.0.1:PORT/metrics."""
    from graph import metrics

    url = database_url(db)

    async def go() -> None:
        async with metrics.serve(url, port) as bound:
            console.print(f"metrics: http://127.0.0.1:{bound}/metrics (state: {redact(url)}); "
                          "Ctrl-C stops it")
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        _run(go())


cli_alerts.register(app)  # bga alerts run / test / history
cli_bridge.register(app)  # bga bridge sync
cli_cluster.register(app)  # bga worker, bga db upgrade
cli_import.register(app)  # bga import
cli_auth.register(app)  # bga hash-password


if __name__ == "__main__":
    app()
