"""``bga bridge``: run the LangSmith Bridge now (``bga bridge sync``)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from graph import cli_errors
from nodes.langsmith_bridge.sync import AGENT_ID, SyncResult, sync
from state.api import SharedState
from state.settings import database_url

bridge_app = cli_errors.Typer(help="LangSmith Bridge: mirror runs (traces) into metrics, error "
                              "patterns and insights.", no_args_is_help=True)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _series(perf: dict[str, Any], agent_id: str) -> dict[str, dict[str, Any]]:
    prefix = f"{agent_id}/"
    return {name: {"count": s["count"], "mean": s["mean"], "p95": s["p95"], "unit": s["unit"]}
            for name, s in perf["series"].items()
            if name.startswith(prefix) and name.count("/") >= 3}


EXPORT_HINT = ("give a JSON Lines export of LangSmith runs: one JSON object per line, as "
               "`Client.list_runs` returns them")
FIRST_LINE_LIMIT = 16 << 20


def check_export_file(path: Path) -> None:
    """Refuse, before anything is written, a file that is not JSON Lines of runs: its first
    non-empty line must be a JSON object (later bad lines are quarantined one by one)."""
    cli_errors.readable_file(path, "an export file")
    with path.open("rb") as f:
        for n, raw in enumerate(iter(lambda: f.readline(FIRST_LINE_LIMIT), b""), 1):
            if not raw.strip():
                continue
            try:
                first = orjson.loads(raw)
            except orjson.JSONDecodeError:
                kind = "binary data" if b"\0" in raw or not _utf8(raw) else "not JSON"
                cli_errors.fail(f"{path} is not a JSON Lines export of runs: line {n} is "
                                f"{kind}; nothing was read", EXPORT_HINT)
            if not isinstance(first, dict):
                cli_errors.fail(f"{path} is not a JSON Lines export of runs: line {n} is a "
                                f"JSON {type(first).__name__}, not an object; nothing was read",
                                EXPORT_HINT)
            return


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@bridge_app.command("sync")
def sync_command(
    file: Annotated[Path | None, typer.Option("--file", help="JSON Lines export of LangSmith "
                                              "runs (default: the configured source)")] = None,
    project: Annotated[str | None, typer.Option(help="Project name for runs from --file "
                                                "(default: the file name)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    db: Annotated[str | None, typer.Option("--db", help="Database URL (default: "
                                           "$BGA_DATABASE_URL, then sqlite:///./data/state.db)")
                  ] = None,
    agent: Annotated[str, typer.Option(help="Bridge agent id")] = AGENT_ID,
    hours: Annotated[int, typer.Option(help="Window of the series summary")] = 24,
) -> None:
    """Run one mirroring pass now and print what it mirrored."""
    if file is not None:
        check_export_file(file)  # a CSV or a binary file would quarantine every line
    url = database_url(db)

    async def go() -> tuple[SyncResult, dict[str, Any], list[dict[str, Any]], float]:
        async with SharedState.open(url, producer="bridge-sync") as shared:
            started = time.perf_counter()
            result = await sync(shared, agent_id=agent, path=file, project=project)
            elapsed = time.perf_counter() - started
            perf = await shared.get_performance_summary(hours=hours)
            insights = [{k: i[k] for k in ("insight_type", "priority", "content",
                                           "occurrences")}
                        for i in await shared.get_insights(acted_upon=False)
                        if i["source_agent"] == agent]
            return result, _series(perf, agent), insights, elapsed

    result, series, insights, elapsed = asyncio.run(go())  # failures: graph.cli_errors
    out = {**result.as_dict(), "seconds": round(elapsed, 3), "series": series,
           "insights": insights}
    if as_json:
        console.print_json(json.dumps(out, default=str))
    else:
        _print(out)
    if result.error:
        raise typer.Exit(1)


def _print(out: dict[str, Any]) -> None:
    source = out.get("source") or {}
    where = source.get("path") or ", ".join(source.get("projects") or []) or source.get("key", "")
    console.print(f"source: {source.get('kind', '?')} {where}".rstrip())
    table = Table(title=f"bridge sync ({out['steps']} step(s), {out['seconds']:.2f} s)")
    for col in ("runs read", "mirrored", "skipped (seen)", "quarantined",
                "in progress", "abandoned", "feedback scores"):
        table.add_column(col, justify="right")
    table.add_row(*(str(out[k]) for k in ("read", "mirrored", "skipped", "quarantined",
                                          "in_progress", "abandoned", "feedback")))
    if "requests" in source:  # the bridge's own count: the SDK retries nothing underneath
        console.print(f"requests: {source['requests']} ({source.get('retries', 0)} retried, "
                      f"{source.get('rate_limited', 0)} rate-limited, waited "
                      f"{source.get('waited_s', 0)} s) via {source.get('api', '?')}",
                      highlight=False)
    console.print(table)
    for q in out.get("quarantine") or []:
        where = "" if q["key"].startswith("line:") else f" {q['key']}"
        console.print(f"  quarantined{where}: {q['reason']}", highlight=False)
    if out["series"]:
        table = Table(title="series")
        for col in ("series", "count", "mean", "p95", "unit"):
            table.add_column(col, justify="left" if col in ("series", "unit") else "right")
        for name, s in sorted(out["series"].items()):
            table.add_row(name, str(s["count"]),
                          *(f"{s[k]:.6g}" if s[k] is not None else "-" for k in ("mean", "p95")),
                          s["unit"] or "")
        console.print(table)
    for i in out.get("insights") or []:
        console.print(f"  insight ({i['priority']}) {i['insight_type']}: "
                      f"{i['content'].get('summary', '')}", highlight=False)
    if out.get("error"):
        err.print(f"[red]error:[/red] {out['error']}")


def register(app: typer.Typer) -> None:
    """Add ``bga bridge ...`` to the main command line."""
    app.add_typer(bridge_app, name="bridge")
