"""One mirroring pass now, outside the scheduler: what ``bga bridge sync`` runs.

Each step is the bridge agent's ordinary step (``nodes.agent_step.step_context``: the same
code, budget, heartbeat and error handling as in a tick), run from the cursor in the state as
of now (``SharedState.read``: the newest checkpoint with the unfolded inbox over it), and its
reports and new cursor go into the inbox in one transaction, the path a ``bga worker`` step
takes (``SharedState.write_events``); the fold turns them into state like any other agent
output. The agent's lock is held throughout, so no tick or worker steps the bridge from the
same cursor meanwhile. Metrics and cursor land together, so a sync interrupted at any point or
re-run counts every run once. Steps repeat until the source is caught up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.agent_step import AgentTask, step_context
from nodes.langsmith_bridge.agent import cursor_key
from nodes.langsmith_bridge.export_file import ExportFileSource, signature
from nodes.langsmith_bridge.mirror import Report
from state import events, policy
from state.api import SharedState
from state.config import AgentSection
from state.queries import config_of
from state.traces import has_store, open_store

AGENT_ID = "langsmith_bridge"
COUNTERS = ("requests", "retries", "rate_limited", "waited_s")


@dataclass
class SyncResult:
    agent_id: str
    steps: int = 0
    report: Report = field(default_factory=Report)
    source: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    quarantine: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "steps": self.steps, **self.report.as_dict(),
                "source": self.source, "error": self.error, "quarantine": self.quarantine}


def _value(values: dict[str, Any], agent_id: str) -> dict[str, Any]:
    return ((values.get("agent_data") or {}).get(agent_id) or {}).get("value") or {}


def _already_seen_lines(path: Path, data: dict[str, Any]) -> int:
    """Records of this export file that earlier passes read (they are not read again)."""
    cursor = (data.get("cursors") or {}).get(cursor_key(ExportFileSource(path)))
    if not cursor:
        return 0
    try:
        sig, size = signature(path)
    except OSError:
        return 0
    return int(cursor.get("r", 0)) if cursor.get("sig") == sig and cursor.get("off", 0) <= size \
        else 0


async def sync(shared: SharedState, *, agent_id: str = AGENT_ID, path: str | Path | None = None,
               project: str | None = None, max_steps: int = 1_000,
               max_runs_per_step: int = 50_000, budget_s: float = 600.0,
               lock_wait: float | None = 60.0) -> SyncResult:
    """Mirror from the configured source (or the export file ``path``) until caught up.

    Holds the agent's lock throughout: a ``bga worker`` stepping the same bridge would mirror
    from the same cursor (LockBusy after ``lock_wait`` names it)."""
    granted = (Path(path).expanduser().resolve(),) if path is not None else ()
    async with shared.backend.agent_lock(agent_id, wait=lock_wait):
        with policy.operator_roots(*granted):  # a file named by the caller, not the config
            return await _sync(shared, agent_id=agent_id, path=path, project=project,
                               max_steps=max_steps, max_runs_per_step=max_runs_per_step,
                               budget_s=budget_s, lock_wait=lock_wait)


async def _sync(shared: SharedState, *, agent_id: str, path: str | Path | None,
                project: str | None, max_steps: int, max_runs_per_step: int, budget_s: float,
                lock_wait: float | None) -> SyncResult:
    backend = shared.backend
    result = SyncResult(agent_id)
    await shared.flush(wait=lock_wait)  # configuration written just before counts
    while result.steps < max_steps:
        values = await shared.read()
        section = config_of(values).agents.get(agent_id) or AgentSection(kind=AGENT_ID)
        options: dict[str, Any] = {**section.options, "force": True,
                                   "max_runs_per_step": max_runs_per_step}
        if path is not None:
            options.update(source="file", path=str(Path(path).expanduser().resolve()))
        if project is not None:
            options["project"] = project
        data = _value(values, agent_id)
        if result.steps == 0 and path is not None:
            result.report.skipped += await asyncio.to_thread(
                _already_seen_lines, Path(path).expanduser().resolve(), data)
        before = (data.get("last") or {}).get("at")
        task = AgentTask(agent_id=agent_id, section=section.model_copy(
            update={"options": options, "budget_s": budget_s}).model_dump(by_alias=True),
            data=data, tick=None)
        ctx = await step_context(task, backend.url, tags=("bridge-sync",))
        outbox = ctx.outbox()
        await shared.write_events(outbox)  # the step's reports and cursor, or none of them
        result.steps += 1
        hb = next((p for kind, p in reversed(outbox) if kind == events.KIND_HEARTBEAT), {})
        last = ctx.data.get("last")
        if last and last.get("at") != before:
            result.report.add(last)
            source = dict(last.get("source") or {})
            for k in COUNTERS:  # the whole sync's requests, retries and waits
                if k in source and k in result.source:
                    source[k] = round(source[k] + result.source[k], 3)
            result.source = source or result.source
            result.error = last.get("error")
        if hb.get("status") not in (None, "ok"):
            result.error = result.error or (hb.get("d") or {}).get("last_error") \
                or hb.get("status")
        if result.error or not (last and last.get("more")):
            break
    await shared.flush(wait=lock_wait)
    if result.report.quarantined and has_store(backend.url):
        store = open_store(backend.url)
        try:
            result.quarantine = await store.quarantined(limit=min(result.report.quarantined, 20))
        finally:
            await store.aclose()
    return result
