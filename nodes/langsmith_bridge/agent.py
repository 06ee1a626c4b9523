"""LangSmithBridgeAgent: mirrors runs (traces) into metrics, error patterns and insights.

Each step polls one source (LangSmith when a key is set, else the local trace store, or an
export file) when the poll interval has passed, and commits chunk by chunk: the chunk's
metrics and errors go into the step's state update together with the source's cursor after
it, in one synchronous block. The update lands in the shared state as one checkpoint, so a
crash, a timeout or a failing request leaves metrics and cursor in agreement and every run is
counted exactly once. Insights are evaluated at the end of the step.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any, Literal

import orjson
from pydantic import Field

from nodes.base import Agent, AgentContext, AgentSettings
from nodes.langsmith_bridge.base import Limits, RunSource, SourceUnavailable
from nodes.langsmith_bridge.export_file import ExportFileSource
from nodes.langsmith_bridge.local import LocalTraceSource
from nodes.langsmith_bridge.mirror import MAX_PROJECT, Mirror, clean
from state import policy
from state.models import MAX_PAYLOAD_BYTES
from state.settings import Settings
from state.settings import current as current_settings
from state.traces import open_store

MAX_CURSORS = 25
DATA_HEADROOM = 2_048


class BridgeSettings(AgentSettings):
    """Options live under ``agents.<id>.options``; ``page_size``, ``poll_interval_s`` and
    ``budget_s`` are the section's own (tunable) fields."""

    source: Literal["auto", "langsmith", "local", "file"] = "auto"
    path: str | None = Field(None, description="JSON Lines export file (source 'file'), "
                             "inside $BGA_EXPORT_ROOTS (state.policy)")
    project: str | None = Field(None, description="project name for runs from a file")
    projects: list[str] | None = Field(None, description="LangSmith projects; default "
                                       "$BGA_LANGSMITH_PROJECTS")
    api_url: str | None = Field(None, description="LangSmith API: $LANGSMITH_ENDPOINT or one "
                                "of $BGA_LANGSMITH_ENDPOINTS (state.policy)")
    web_url: str | None = Field(None, description="LangSmith UI, for links to runs")
    api_version: Literal["auto", "v1", "v2"] = "auto"
    page_size: int = Field(100, ge=1, le=100)
    poll_interval_s: float = Field(30.0, gt=0)
    budget_s: float = Field(10.0, gt=0)
    child_run_types: list[str] = Field(default_factory=lambda: ["chain", "llm", "tool",
                                                                "retriever"])
    max_runs_per_step: int = Field(20_000, ge=1)
    backfill_s: float = Field(3_600.0, ge=0, description="how far back the first poll reads")
    settle_s: float = Field(30.0, ge=0, description="how long after its start a run is "
                            "first looked for (LangSmith)")
    overlap_s: float = Field(600.0, ge=0, le=21_600, description="re-read this far behind the "
                             "cursor: a run visible up to settle_s + overlap_s after its start "
                             "is still counted")
    max_seen: int = Field(500, ge=10, le=600, description="runs remembered in the overlap")
    feedback: bool = Field(True, description="mirror feedback scores (LangSmith)")
    max_open: int = Field(100, ge=1, le=150, description="runs in progress tracked by id")
    max_open_age_s: float = Field(6 * 3_600.0, gt=0)
    timeout_s: float = Field(20.0, gt=0)
    max_attempts: int = Field(4, ge=1, le=10)
    backoff_base_s: float = Field(0.5, gt=0)
    max_retry_wait_s: float = Field(30.0, gt=0)
    max_backoff_s: float = Field(900.0, gt=0, description="longest wait between failed polls")
    force: bool = Field(False, description="poll now, ignoring the poll interval and backoff")
    # insight thresholds are the coordinator's, in RulesConfig (``rules.*``)
    max_examples: int = Field(3, ge=1, le=10)


def configured_projects(settings: BridgeSettings, env: Settings) -> list[str]:
    if settings.projects:
        return [p for p in settings.projects if p.strip()]
    found = [p.strip() for p in env.langsmith_projects.split(",") if p.strip()]
    return found or [os.environ.get("LANGSMITH_PROJECT") or "default"]


def make_source(settings: BridgeSettings, database_url: str | None,
                loop_key: int = 0) -> RunSource:
    """The configured source: a file if a path is given, LangSmith if a key is set, else local.

    Reads the environment and ``.env`` and may touch the file system: call it off the event
    loop (``langgraph dev`` refuses blocking calls in nodes).
    """
    env = current_settings()
    kind = settings.source
    if kind == "auto":
        kind = "file" if settings.path else ("langsmith" if env.langsmith_api_key else "local")
    if kind == "file":
        if not settings.path:
            raise ValueError("source 'file' needs options.path")
        path = policy.confine("options.path", settings.path, policy.export_roots(),
                              "BGA_EXPORT_ROOTS")
        return ExportFileSource(path, project=settings.project,
                                host_url=settings.web_url)
    if kind == "langsmith":
        if env.langsmith_api_key is None:
            raise ValueError("source 'langsmith' needs LANGSMITH_API_KEY in the environment")
        from nodes.langsmith_bridge.langsmith_api import LangSmithSource

        return LangSmithSource(
            api_key=env.langsmith_api_key, projects=configured_projects(settings, env),
            api_url=policy.langsmith_endpoint("options.api_url", settings.api_url),
            web_url=settings.web_url, page_size=settings.page_size,
            child_run_types=settings.child_run_types, backfill_s=settings.backfill_s,
            settle_s=settings.settle_s, overlap_s=settings.overlap_s,
            max_seen=settings.max_seen, feedback=settings.feedback, max_open=settings.max_open,
            max_open_age_s=settings.max_open_age_s, timeout_s=settings.timeout_s,
            max_attempts=settings.max_attempts, backoff_base_s=settings.backoff_base_s,
            max_retry_wait_s=settings.max_retry_wait_s, api_version=settings.api_version,
            loop_key=loop_key)
    if database_url is None:
        raise ValueError("the local trace store needs the state database URL")
    return LocalTraceSource(database_url)


def cursor_key(source: RunSource) -> str:
    """Short, secret-free key of a source's cursor in the agent's data."""
    if source.key.startswith("file:"):
        return "file:" + hashlib.blake2b(source.key.encode(), digest_size=8).hexdigest()
    return source.key


async def read_state(database_url: str | None) -> dict[str, Any]:
    """The shared state as of now (metrics and patterns are the insights' baseline)."""
    if not database_url:
        return {}
    from state.api import SharedState

    try:
        async with SharedState.open(database_url, producer="langsmith_bridge",
                                    read_only=True) as shared:
            return await shared.read()
    except Exception:  # insights are advisory: without a baseline there are just fewer
        return {}


class LangSmithBridgeAgent(Agent):
    """Mirrors LangSmith runs (or local traces, or an export file) into the shared state."""

    kind = "langsmith_bridge"
    Settings = BridgeSettings
    settings: BridgeSettings

    async def step(self, ctx: AgentContext) -> None:
        s = self.settings
        now = ctx.now
        data = ctx.data
        due = max(float(data.get("last_poll_at", 0.0)) + 0.9 * s.poll_interval_s,
                  float(data.get("retry_at", 0.0)))
        if not s.force and now < due:
            ctx.progress["next_poll_in_s"] = round(due - now, 1)
            return
        started = time.monotonic()  # the step's own deadline counts making the source too
        source = await asyncio.to_thread(make_source, s, ctx.database_url,
                                         id(asyncio.get_running_loop()))
        key = cursor_key(source)
        limits = Limits(max_runs=s.max_runs_per_step, deadline=started + 0.8 * s.budget_s,
                        now=now)
        state = ctx.state or await read_state(ctx.database_url)
        mirror = Mirror(ctx, s, state, data.get("slowest"))
        report = mirror.report
        cursors: dict[str, Any] = dict(data.get("cursors") or {})
        store = open_store(ctx.database_url) if ctx.database_url else None
        failure: SourceUnavailable | None = None
        try:
            async for chunk in source.poll(cursors.get(key), limits):
                if chunk.quarantined and store is not None:
                    await store.quarantine(chunk.quarantined, now)  # idempotent: before commit
                # -- commit this chunk: synchronous from here, cursor first ---------------
                cursors.pop(key, None)
                cursors[key] = chunk.cursor
                ctx.set_data(cursors=_bounded(cursors, key))
                self._commit(ctx, mirror, chunk)
        except SourceUnavailable as exc:
            failure = exc
        finally:
            await source.aclose()
            if store is not None:
                await store.aclose()
        elapsed = time.monotonic() - started
        report.polls = 1
        if report.read:
            ctx.metric("runs_read", report.read)
            ctx.metric("poll_ms", elapsed * 1000.0, unit="ms")
        if report.mirrored:
            ctx.metric("runs_mirrored", report.mirrored)
            ctx.metric("runs_per_s", report.mirrored / max(elapsed, 1e-6), unit="runs/s")
        if report.quarantined:
            ctx.metric("runs_quarantined", report.quarantined)
        for insight_type, content, priority, dedupe in mirror.insights():
            ctx.insight(insight_type, content, priority, key=dedupe)
        summary = {**report.as_dict(), "source": source.describe(), "at": now}
        failures = int(data.get("failures", 0))
        retry_at = 0.0
        if failure is not None:
            failures += 1
            backoff = min(s.max_backoff_s, s.poll_interval_s * 2 ** min(failures - 1, 30))
            # a server's Retry-After is honoured even beyond our own backoff (up to a day)
            wait = s.max_backoff_s if failure.fatal else min(
                86_400.0, max(failure.retry_after or 0.0, backoff))
            retry_at = now + wait
            summary["error"] = str(failure)[:300]
            summary["retry_in_s"] = round(wait, 1)
        else:
            failures = 0
        ctx.set_data(last_poll_at=now, retry_at=retry_at, failures=failures, last=summary,
                     slowest=mirror.slowest)
        ctx.progress.update({k: summary[k] for k in ("read", "mirrored", "skipped",
                                                     "quarantined", "in_progress")})
        if failure is not None:
            raise failure  # the step shows as failed; what was mirrored before it stays

    @staticmethod
    def _commit(ctx: AgentContext, mirror: Mirror, chunk: Any) -> None:
        report = mirror.report
        report.read += chunk.read
        report.skipped += chunk.skipped
        report.in_progress += chunk.in_progress
        report.abandoned += chunk.abandoned
        report.more = chunk.more
        for run in chunk.runs:
            try:
                mirror.add(run)
            except Exception as exc:  # one bad run never loses the rest of the chunk
                report.quarantined += 1
                ctx.error("UnmirrorableRun", f"run {run.id}: {type(exc).__name__}: {exc}")
        for score in chunk.feedback:
            try:
                mirror.add_feedback(score)
            except Exception as exc:
                report.quarantined += 1
                ctx.error("UnmirrorableFeedback",
                          f"feedback {score.id}: {type(exc).__name__}: {exc}")
        for q in chunk.quarantined:
            report.quarantined += 1
            if len(report.reasons) < 5:
                report.reasons.append(q.reason[:200])
            ctx.error("MalformedRun", q.reason)
        for error_type, message in chunk.errors:
            ctx.error(error_type, message)
        for project, metric, value, unit in chunk.gauges:
            ctx.metric(f"{clean(project, MAX_PROJECT)}/(project)/{metric}", value, unit=unit)


def _bounded(cursors: dict[str, Any], current: str) -> dict[str, Any]:
    """Keep the agent's data within the state's size limit: forget the oldest file cursors."""
    while len(cursors) > MAX_CURSORS or \
            len(orjson.dumps(cursors)) > MAX_PAYLOAD_BYTES - DATA_HEADROOM:
        old = next((k for k in cursors if k != current and k.startswith("file:")), None)
        if old is None:
            break
        del cursors[old]
    return cursors
