"""``bga import``: import one profile file with a progress bar, then print the job report.

    bga import PATH [--db URL] [--json] [--force] [--batch-size N] [--region US]
    bga import --show-rejected JOB [--json]

Exit status: 0 when the job is done (rejected rows are not a failure) or the file was already
imported, 1 when the job failed (or could not run: another process is importing the same file),
2 for usage errors. An interrupted or
killed import resumes from its last committed batch when the same command runs again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from graph import cli_common
from graph.cli_common import DB_HELP, console, err
from nodes.profile_import.job import DEFAULT_BATCH_SIZE, BatchInfo, ImportOptions
from nodes.profile_import.job_graph import import_file
from nodes.profile_import.models import DEFAULT_REGION, REASONS
from nodes.profile_import.store import (
    JobMoved,
    ProfileStore,
    database_errors,
    profiles_location,
)
from state.backends.migrations import SchemaNotReady
from state.settings import database_url


@contextlib.contextmanager
def fewer_full_collections() -> Iterator[None]:
    """No full GC passes while importing: each would rescan every long-lived object (all of
    langgraph, pydantic, ...) every few batches, about 15 % of the import's CPU time. Batches
    are freed by reference counting; young cycles are still collected."""
    old = gc.get_threshold()
    gc.set_threshold(old[0], old[1], 1_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def register(app: typer.Typer) -> None:
    """Add the ``import`` command to the ``bga`` app."""
    app.command("import")(import_command)


def import_command(
    path: Annotated[Path | None, typer.Argument(
        help="CSV (any delimiter, header row, UTF-8), JSON Lines or JSON array file")] = None,
    db: Annotated[str | None, typer.Option(
        "--db", help=f"{DB_HELP}; profiles go to <state>.profiles.db beside a SQLite state, "
                     "into the same schema on PostgreSQL")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON "
                                                         "object")] = False,
    force: Annotated[bool, typer.Option(help="Import again even if this content was "
                                             "imported before")] = False,
    show_rejected: Annotated[str | None, typer.Option(
        "--show-rejected", metavar="JOB", help="List the quarantined rows of job JOB")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1_000_000,
                                            help="Rows per batch (one commit each)")]
    = DEFAULT_BATCH_SIZE,
    region: Annotated[str, typer.Option(help="Default region of phone numbers without a "
                                             "country code")] = DEFAULT_REGION,
    limit: Annotated[int, typer.Option(min=1, help="Rows shown by --show-rejected")] = 100,
    test_email_domains: Annotated[bool, typer.Option(
        "--test-email-domains", help="Accept e-mail addresses at .test domains (other "
                                     "special-use domains are always refused)")] = False,
) -> None:
    """Import profiles from a file into the profiles database (resumable, idempotent)."""
    url = database_url(db)
    if show_rejected is not None:
        _show_rejected(url, show_rejected, limit, as_json)
        return
    if path is None:
        err.print("[red]error:[/red] give a file to import, or --show-rejected JOB")
        raise typer.Exit(2)
    if path.is_dir():
        cli_common.fail(f"{path} is a directory, not a file",
                        "give one CSV, JSON Lines or JSON file; to import a whole directory, "
                        "drop its files into the profile_import agent's inbox (data/imports/ "
                        "beside the state database) while `bga run` runs")
    with fewer_full_collections():
        report = _run_import(path, url, force, ImportOptions(
            batch_size=batch_size, region=region.upper(),
            test_email_domains=test_email_domains), as_json)
    if as_json:
        sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    else:
        print_report(report)
    if report.get("status") in ("failed", "busy"):
        raise typer.Exit(1)


def _run_import(path: Path, url: str, force: bool, options: ImportOptions,
                quiet: bool) -> dict[str, Any]:
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        TaskProgressColumn(), TextColumn("{task.fields[rows]:>10,} rows"),
                        TextColumn("{task.fields[rate]:>8,.0f} rows/s"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err,
                        disable=not err.is_terminal, transient=quiet)
    task = progress.add_task(path.name, total=None, rows=0, rate=0.0)
    started = time.perf_counter()
    first_read: list[int] = []

    def on_start(job: dict[str, Any], action: str) -> None:
        first_read.append(int(job.get("rows_read") or 0))
        progress.update(task, total=job["size"], completed=job.get("byte_offset") or 0,
                        rows=first_read[0])
        if action == "resumed" and not quiet:
            err.print(f"resuming job {job['job_id']} at line {job['line_no']:,} "
                      f"({job['rows_read']:,} rows already committed)")

    def on_batch(info: BatchInfo) -> None:
        elapsed = max(time.perf_counter() - started, 1e-9)
        progress.update(task, completed=info.offset, rows=info.read_total,
                        rate=(info.read_total - first_read[0]) / elapsed)

    try:
        with progress:
            return asyncio.run(import_file(path, database_url=url, force=force, options=options,
                                           on_start=on_start, on_batch=on_batch))
    except KeyboardInterrupt:
        err.print("interrupted: committed batches are kept; run the same command again to "
                  "resume")
        raise typer.Exit(130) from None
    except JobMoved as exc:  # not a failure of the job: it goes on in the other process
        return _no_job(path, "busy", f"{exc}; it continues there")
    except FileNotFoundError:
        return _no_job(path, "failed", f"no such file: {path}")
    # committed batches stay: rerun. (mypy does not read a starred tuple of exception classes;
    # database_errors() must run here, after the import may have loaded psycopg)
    except (OSError, ValueError, *database_errors()) as exc:  # type: ignore[misc]
        return _no_job(path, "failed", f"{type(exc).__name__}: {exc}")


def _no_job(path: Path, status: str, error: str) -> dict[str, Any]:
    return {"job_id": None, "file": str(path), "status": status, "error": error,
            "read": 0, "inserted": 0, "updated": 0, "unchanged": 0, "rejected": 0}


def print_report(report: dict[str, Any]) -> None:
    """The job report as a person reads it."""
    status = report.get("status")
    colour = {"done": "green", "skipped": "yellow", "failed": "red"}.get(status or "", "white")
    if report.get("job_id") is None:
        err.print(f"[red]error:[/red] {report.get('error')}")
        return
    console.print(f"[bold]{report['name']}[/bold]: job {report['job_id']} "
                  f"[{colour}]{status}[/{colour}]"
                  + (" (resumed)" if report.get("action") == "resumed" else ""))
    if status == "skipped":
        console.print(f"already imported by job {report.get('duplicate_of')}: nothing to do "
                      "(use --force to import it again)")
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("what")
    table.add_column("rows", justify="right")
    table.add_column("share", justify="right")
    read = report["read"] or 1
    for key in ("read", "inserted", "updated", "unchanged", "rejected"):
        share = "" if key == "read" else f"{report[key] / read:.1%}"
        table.add_row(key, f"{report[key]:,}", share)
    console.print(table)
    ok = "[green]ok[/green]" if report.get("invariant_ok") else "[red]VIOLATED[/red]"
    console.print(f"accounting: read {report['read']:,} = inserted {report['inserted']:,} + "
                  f"updated {report['updated']:,} + unchanged {report['unchanged']:,} + rejected "
                  f"{report['rejected']:,}: {ok}")
    lines = report.get("lines")
    if lines:
        ok = "[green]ok[/green]" if lines["ok"] else "[red]VIOLATED[/red]"
        console.print(f"lines: {lines['detail']}: {ok}")
    if report.get("reasons"):
        reasons = ", ".join(f"{REASONS.get(code, code)} {n:,}"
                            for code, n in report["reasons"].items())
        console.print(f"rejected rows by reason: {reasons}")
        console.print(f"see them with: bga import --show-rejected {report['job_id']}")
    if report.get("rows_per_s"):
        console.print(f"{report['batches']:,} batches, {report['active_s']:.2f} s, "
                      f"{report['rows_per_s']:,.0f} rows/s")
    for warning in report.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if report.get("error"):
        console.print(f"[red]error:[/red] {report['error']}")


def _show_rejected(url: str, job_id: str, limit: int, as_json: bool) -> None:
    try:
        location = profiles_location(url)
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        store = ProfileStore.open(location, create=False)  # a typo must not create one
    except (FileNotFoundError, SchemaNotReady) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (OSError, *database_errors()) as exc:  # type: ignore[misc]  # see _run_import
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    try:
        job = store.job(job_id)
        if job is None:
            err.print(f"[red]error:[/red] no import job {job_id!r} in {store.where}")
            raise typer.Exit(2)
        rows = store.quarantined(job_id, limit=limit)
        total = store.count_quarantined(job_id)
    finally:
        store.close()
    if as_json:
        sys.stdout.write(json.dumps({"job_id": job_id, "file": job["path"], "total": total,
                                     "rejected": rows}) + "\n")
        return
    table = Table(title=f"Rejected rows of job {job_id} ({job['name']}): {total:,}"
                        + (f", first {len(rows):,} shown" if total > len(rows) else ""))
    table.add_column("line", justify="right")
    table.add_column("reasons")
    table.add_column("row", overflow="fold", max_width=60)
    for r in rows:
        raw = r["raw"].rstrip("\r\n")
        table.add_row(str(r["line"]), "\n".join(r["reasons"]),
                      raw if len(raw) <= 200 else raw[:200] + "…")
    console.print(table)
