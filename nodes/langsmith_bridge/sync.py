"""One mirroring pass now, outside the scheduler: what ``bga bridge sync`` runs.

Each step is the bridge agent's ordinary step (``nodes.agent_step.run_step``: the same code,
budget, heartbeat and error handling as in a tick), run under the fold lock from the newest
checkpoint's cursor, and its update is written as the next checkpoint through the same path
``SharedState.flush`` uses (compare-and-swap on the checkpoint). Metrics and cursor land
together, so a sync interrupted at any point, re-run, or racing a tick counts every run once.
Steps repeat until the source is caught up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodes.agent_step import AgentTask, run_step
from nodes.langsmith_bridge.agent import cursor_key
from nodes.langsmith_bridge.export_file import ExportFileSource, signature
from nodes.langsmith_bridge.mirror import Report
from state import policy
from state.api import SharedState
from state.backends import StaleCheckpoint
from state.config import AgentSection
from state.folder import FOLD_NODE, build_fold_graph
from state.queries import config_of
from state.traces import has_store, open_store

AGENT_ID = "langsmith_bridge"


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
    graph = build_fold_graph(backend)
    result = SyncResult(agent_id)
    stale = 0
    await shared.flush(wait=lock_wait)  # configuration written just before counts
    while result.steps < max_steps:
        async with backend.fold_lock(lock_wait):
            values = dict((await graph.aget_state(shared.config)).values)
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
            task: AgentTask = {"agent_id": agent_id,
                    "section": section.model_copy(update={"options": options,
                                                          "budget_s": budget_s}
                                                  ).model_dump(by_alias=True),
                    "data": data, "tick": int((values.get("tick") or {}).get("n", 0))}
            update = await run_step(task, backend.url)
            try:
                await graph.aupdate_state(shared.config, update, as_node=FOLD_NODE)
            except StaleCheckpoint:
                stale += 1  # a writer outside the lock got there first: redo from its cursor
                if stale > 3:
                    raise
                continue
        result.steps += 1
        hb = ((update.get("agents") or {}).get(agent_id) or {}).get("hb") or {}
        last = (update.get("agent_data") or {}).get(agent_id, {}).get("value", {}).get("last")
        if last and last.get("at") != before:
            result.report.add(last)
            result.source = last.get("source") or result.source
            result.error = last.get("error")
        if hb.get("status") not in (None, "ok"):
            result.error = result.error or (hb.get("data") or {}).get("last_error") \
                or hb.get("status")
        if result.error or not (last and last.get("more")):
            break
    if result.report.quarantined and has_store(backend.url):
        store = open_store(backend.url)
        try:
            result.quarantine = await store.quarantined(limit=min(result.report.quarantined, 20))
        finally:
            await store.aclose()
    return result
