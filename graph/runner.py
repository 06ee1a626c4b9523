"""Run ticks of the system graph under the fold lock, then clean up behind them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from langchain_core.runnables import RunnableConfig

from graph.system import build_system_graph
from graph.tracing import local_tracer
from state.api import SharedState
from state.backends import describe_trouble
from state.queries import config_of

log = logging.getLogger("bga.runner")


@dataclass
class TickReport:
    duration_s: float
    events_folded: int
    checkpoints_pruned: int


async def tick(shared: SharedState, *, wait: float | None = None, trace: bool = True,
               coordinator_only: bool = False) -> TickReport:
    """One tick: only one ticker or folder per database at a time (the fold lock).

    With ``trace`` the tick's runs are recorded in the local trace store (``LocalTracer``);
    ``coordinator_only`` leaves every agent to worker processes (``bga worker``).
    """
    backend = shared.backend
    graph = build_system_graph(backend).compile(checkpointer=backend.checkpointer)
    started = time.perf_counter()
    async with backend.fold_lock(wait):
        current = (await graph.aget_state(shared.config)).values
        before = current.get("stats", {})
        n = int((current.get("tick") or {}).get("n", 0)) + 1
        config: RunnableConfig = {"configurable": {**shared.config["configurable"],
                                   "coordinator_only": coordinator_only},
                  "run_name": "system_tick",
                  "tags": ["background-agents", f"tick:{n}"],
                  "metadata": {"tick": n, "thread_id": shared.thread_id}}
        tracer = local_tracer(backend) if trace else None
        if tracer is not None:  # the local trace store the LangSmith Bridge reads by default
            config["callbacks"] = [tracer]
        try:
            values = await graph.ainvoke({}, config, durability="exit")
        finally:
            if tracer is not None:
                await tracer.flush()  # never raises
        try:  # the tick has committed: clean-up that fails now is done by the next tick
            await backend.delete_folded(values.get("inbox") or {})
            keep = config_of(values).retention.checkpoints
            pruned = await backend.prune_checkpoints(shared.thread_id, keep)
        except Exception as exc:
            log.warning("tick %s committed; its clean-up is left to the next tick: %s", n,
                        describe_trouble(exc, backend.where))
            pruned = 0
    folded = values.get("stats", {}).get("events_folded", 0) - before.get("events_folded", 0)
    return TickReport(time.perf_counter() - started, int(folded), pruned)
