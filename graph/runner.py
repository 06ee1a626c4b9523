"""Run ticks of the system graph under the fold lock, then clean up behind them; the
scheduler's garbage-collector upkeep between two ticks (``settle_gc``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from graph.system import build_system_graph
from graph.tracing import local_tracer
from state.api import SharedState
from state.backends import describe_trouble
from state.checkpoints import freeze_heap
from state.context import Context
from state.queries import config_of
from state.schema import SystemState

log = logging.getLogger("bga.runner")


def system_graph(checkpointer: BaseCheckpointSaver
                 ) -> CompiledStateGraph[SystemState, Context, SystemState, SystemState]:
    """The system graph compiled once per checkpointer (compiling costs ~60 ms a tick; a
    compiled graph is reusable and holds no run state), kept on the checkpointer itself."""
    graph = getattr(checkpointer, "_bga_system_graph", None)
    if graph is None:
        graph = build_system_graph(checkpointer=checkpointer)
        checkpointer._bga_system_graph = graph  # type: ignore[attr-defined]  # our own cache
    return graph


@dataclass
class TickReport:
    duration_s: float
    events_folded: int
    checkpoints_pruned: int


async def tick(shared: SharedState, *, wait: float | None = None, trace: bool = True,
               coordinator_only: bool = False) -> TickReport:
    """One tick: only one ticker or folder per database at a time (the fold lock).

    The graph runs on ``shared``'s database and clock (its context). With ``trace`` the
    tick's runs are recorded in the local trace store (``LocalTracer``); ``coordinator_only``
    leaves every agent to worker processes (``bga worker``).
    """
    backend = shared.backend
    graph = system_graph(backend.checkpointer)
    context = Context(backend=backend, clock=shared.clock, coordinator_only=coordinator_only)
    started = time.perf_counter()
    async with backend.fold_lock(wait):
        current = (await graph.aget_state(shared.config)).values
        before = current.get("stats", {})
        n = int((current.get("tick") or {}).get("n", 0)) + 1
        config: RunnableConfig = {"configurable": dict(shared.config["configurable"]),
                                  "run_name": "system_tick",
                                  "tags": ["background-agents", f"tick:{n}"],
                                  "metadata": {"tick": n, "thread_id": shared.thread_id}}
        tracer = local_tracer(backend) if trace else None
        if tracer is not None:  # the local trace store the LangSmith Bridge reads by default
            config["callbacks"] = [tracer]
        try:
            values = await graph.ainvoke({}, config, context=context, durability="exit")
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


def settle_gc() -> float:
    """Garbage-collector upkeep between two ticks; returns the seconds it took. The scheduler
    calls it after every tick, before it sleeps until the next one (so what it costs is no
    tick's latency); ``bench/tick_latency.py`` calls it the same way and reports its cost.

    The first call in a process, when the process is warm (modules imported, the system graph
    compiled, a tick run), freezes the heap (``state.checkpoints.freeze_heap``: a full
    collection, then what survived ``gc.freeze``-d); later calls do nothing. Unfrozen, every
    full collection, one every few ticks, walked those ~120k long-lived objects (langgraph,
    langchain, pydantic, the compiled graph): ~60-100 ms inside one tick, the 50-agent p95.
    Frozen, it walks only what was made since (~5k objects a few ticks in, ~1 ms; more as the
    state grows, e.g. ~35k after 1,000 ticks of 50 trivial agents). Cyclic garbage
    made by ticks is collected as before; what can never be collected (a cycle among the
    frozen objects that becomes garbage later) is bounded by the heap of that one moment.
    """
    started = time.perf_counter()
    freeze_heap()
    return time.perf_counter() - started
