"""The Profile Import Executor as a background agent (kind ``profile_import``).

Each step watches the inbox folder (option ``inbox``; default ``imports/`` beside a SQLite
state database, i.e. ``./data/imports/``; no default on PostgreSQL or memory), resumes a paused
job or starts one for a new file, and works for at most ``work_fraction`` of its step budget:
a big file is imported over several ticks, each resuming from the last committed batch. New
files are picked up once they have not changed for ``settle_s`` seconds (so half-copied files
wait); a file whose exact version (path, size, mtime) already has a job is not looked at again,
and content imported before (same hash, any path) is skipped.

Reports: ``rows_per_s`` (the metric the optimizer tunes ``batch_size`` against),
``rows_read`` (rows of the step: its window sum is the importer's throughput on ``/metrics``),
``batch_latency_ms`` per batch, ``rejection_rate`` and ``duplicate_rate`` (percent of the rows
of the step), one ``RowRejected`` error per rejection reason per batch (grouped by reason),
``ImportFailed`` errors, and insights per finished file (``import_rejections`` when too many
rows were rejected, ``import_failed``, ``import_completed``).

The job graph is ``nodes.profile_import.job_graph`` beside this module; the agent calls its
``run_job``. Another runner may be named in ``options.runner`` only if the operator lists it
in ``BGA_IMPORT_RUNNERS`` (``state.policy``).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from nodes.base import Agent, AgentContext, AgentSettings
from nodes.profile_import.job import ImportOptions
from nodes.profile_import.job_graph import run_job as run_built_in_job
from nodes.profile_import.models import DEFAULT_REGION, REASONS
from nodes.profile_import.readers import Limits
from nodes.profile_import.store import (
    JobMoved,
    ProfileStore,
    default_inbox,
    iter_files,
    profiles_location,
)
from state import policy
from state.backends import make_backend
from state.settings import current as current_settings

RUNNER = "nodes.profile_import.job_graph:run_job"  # the built-in one; others: BGA_IMPORT_RUNNERS
PATTERNS = ("*.csv", "*.tsv", "*.jsonl", "*.ndjson", "*.json")
MAX_ERROR_EVENTS = 50  # per step: grouped reasons, not one event per rejected row


class ProfileImportSettings(AgentSettings):
    """Tunable settings; ``batch_size`` is the optimizer's knob."""

    batch_size: int = Field(2_000, ge=1, le=1_000_000)
    budget_s: float = Field(10.0, gt=0)
    inbox: str | None = None
    patterns: tuple[str, ...] = PATTERNS
    region: str = DEFAULT_REGION
    test_email_domains: bool = False  # accept e-mail addresses at .test domains
    work_fraction: float = Field(0.6, gt=0, le=0.95)
    settle_s: float = Field(2.0, ge=0)
    rejection_insight_pct: float = Field(5.0, ge=0, le=100)
    max_field_bytes: int = Field(1 << 20, ge=1024)
    max_record_bytes: int = Field(4 << 20, ge=1024)
    runner: str = RUNNER


def summary_of(report: dict[str, Any]) -> str:
    """``orders.csv: 14 % of rows rejected, mostly invalid e-mail``."""
    pct = report["rejection_rate"] * 100
    reasons = report.get("reasons") or {}
    top = next(iter(reasons), None)
    mostly = f", mostly {REASONS.get(top, top)}" if top else ""
    return f"{report['name']}: {pct:.0f} % of rows rejected{mostly}"


class ProfileImportAgent(Agent):
    """Imports profile files dropped into the inbox, a budgeted slice per tick."""

    kind = "profile_import"
    Settings = ProfileImportSettings
    settings: ProfileImportSettings

    def _runner(self) -> Any:
        runner = policy.import_runner(f"agents.{self.agent_id}.options.runner",
                                      self.settings.runner, (RUNNER,))
        if runner == RUNNER:
            return run_built_in_job
        module, _, name = runner.partition(":")
        return getattr(importlib.import_module(module), name)

    def _options(self) -> ImportOptions:
        s = self.settings
        return ImportOptions(batch_size=s.batch_size, region=s.region.upper(),
                             limits=Limits(s.max_field_bytes, s.max_record_bytes),
                             test_email_domains=s.test_email_domains)

    def next_job(self, store: ProfileStore, inbox: Path) -> dict[str, Any] | None:
        """The job to work on: a paused one in the inbox first, then a new file."""
        root = inbox.resolve()
        for job in store.running_jobs():
            path = Path(job["path"])
            if path.parent != root:
                continue  # e.g. a `bga import` of a file elsewhere: its own command resumes it
            try:
                st = path.stat()
            except FileNotFoundError:
                return job  # the job graph fails it with a clear "disappeared" error
            if (st.st_size, st.st_mtime_ns) == (job["size"], job["mtime_ns"]):
                return job
            prepared = store.prepare(path)
            if prepared.job["job_id"] != job["job_id"]:
                store.finish(job["job_id"], "failed",
                             f"{path.name} changed during the import; its new version is job "
                             f"{prepared.job['job_id']}")
            if prepared.action != "skipped":
                return prepared.job
        now = time.time()
        for path in iter_files(inbox, self.settings.patterns):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if now - st.st_mtime < self.settings.settle_s:
                continue
            if store.seen(path.resolve(), st.st_size, st.st_mtime_ns) is not None:
                continue
            try:
                prepared = store.prepare(path)
            except FileNotFoundError:
                continue
            if prepared.action != "skipped":
                return prepared.job
        return None

    async def step(self, ctx: AgentContext) -> None:
        s = self.settings
        url = ctx.database_url or current_settings().database_url
        default = default_inbox(url)
        inbox = policy.confine(f"agents.{self.agent_id}.options.inbox", s.inbox,
                               policy.import_roots(default), "BGA_IMPORT_ROOTS") \
            if s.inbox else default
        ctx.progress = {"inbox": str(inbox) if inbox else None}
        if inbox is None or not inbox.is_dir():
            ctx.progress["idle"] = "no inbox folder"
            return
        deadline = time.monotonic() + s.budget_s * s.work_fraction
        run_job, options = self._runner(), self._options()
        backend = make_backend(url)
        await backend.setup()
        store = await asyncio.to_thread(ProfileStore.open, profiles_location(url))
        batches: list[Any] = []
        slice_rows = {"read": 0, "rejected": 0, "duplicates": 0}
        started = time.perf_counter()
        jobs_done = int(ctx.data.get("jobs_done", 0))
        try:
            first = True  # every step makes progress, however small its budget
            while first or time.monotonic() < deadline:
                first = False
                job = await asyncio.to_thread(self.next_job, store, inbox)
                if job is None:
                    break
                ctx.progress.update(job=job["job_id"], file=job["name"])
                try:
                    report = await run_job(store, backend, job, options, deadline=deadline,
                                           on_batch=batches.append)
                except JobMoved as exc:
                    ctx.progress["busy"] = str(exc)
                    break
                self._report_job(ctx, report)
                if report["status"] != "running":
                    jobs_done += 1
                else:
                    break  # paused at the deadline: the next step resumes it
        finally:
            store.close()
            await backend.aclose()
        errors = 0
        for info in batches:
            ctx.metric("batch_latency_ms", info.latency_ms, unit="ms")
            slice_rows["read"] += info.rows
            slice_rows["rejected"] += info.rejected
            slice_rows["duplicates"] += info.counts["updated"] + info.counts["unchanged"]
            for code in info.reasons:
                if errors < MAX_ERROR_EVENTS:
                    ctx.error("RowRejected", f"rows rejected: {REASONS.get(code, code)}")
                    errors += 1
        if slice_rows["read"]:
            elapsed = time.perf_counter() - started
            valid = slice_rows["read"] - slice_rows["rejected"]
            ctx.metric("rows_per_s", slice_rows["read"] / elapsed)
            ctx.metric("rows_read", slice_rows["read"], unit="rows")  # sums to throughput
            ctx.metric("rejection_rate", 100 * slice_rows["rejected"] / slice_rows["read"],
                       unit="%")
            if valid:
                ctx.metric("duplicate_rate", 100 * slice_rows["duplicates"] / valid, unit="%")
        ctx.progress.update(rows=slice_rows["read"], batches=len(batches))
        ctx.set_data(jobs_done=jobs_done)

    def _report_job(self, ctx: AgentContext, report: dict[str, Any]) -> None:
        """Progress while a job runs; insights and errors once it ends."""
        status, name = report["status"], report["name"]
        pct = 100 * report["byte_offset"] / report["size"] if report["size"] else 100.0
        ctx.progress.update(job=report["job_id"], file=name, job_status=status,
                            done_pct=round(pct, 1), job_rows=report["read"])
        small = {k: report[k] for k in ("job_id", "name", "status", "read", "inserted",
                                        "updated", "unchanged", "rejected")}
        if status == "running":
            ctx.set_data(active_job=small)
            return
        ctx.set_data(active_job=None, last_job=small)
        key = f"{name}:{report['job_id']}"
        if status == "failed":
            ctx.error("ImportFailed", f"{name}: {report.get('error')}")
            ctx.insight("import_failed", {"key": f"import_failed:{key}", "file": name,
                                          "job_id": report["job_id"],
                                          "error": str(report.get("error"))[:500],
                                          "summary": f"{name}: import failed: "
                                                     f"{report.get('error')}"[:300]},
                        priority="high")
            return
        if report["read"] and report["rejection_rate"] * 100 >= \
                self.settings.rejection_insight_pct:
            pct_rej = report["rejection_rate"] * 100
            ctx.insight("import_rejections",
                        {"key": f"import_rejections:{key}", "file": name,
                         "job_id": report["job_id"], "rejected": report["rejected"],
                         "read": report["read"], "reasons": report["reasons"],
                         "summary": summary_of(report)},
                        priority="high" if pct_rej >= 25 else "medium")
        ctx.insight("import_completed",
                    {"key": f"import_completed:{key}", "file": name,
                     "job_id": report["job_id"], **{k: report[k] for k in (
                         "read", "inserted", "updated", "unchanged", "rejected")},
                     "summary": f"{name}: {report['read']:,} rows: {report['inserted']:,} new, "
                                f"{report['updated']:,} updated, {report['unchanged']:,} "
                                f"unchanged, {report['rejected']:,} rejected"},
                    priority="info")  # informational: nothing to act on
