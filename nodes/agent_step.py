"""The ``run_agent`` node: one step of one agent, fanned out in parallel with ``Send``.

A failing or slow agent never breaks the tick: its exception or timeout becomes an error
pattern and a heartbeat with status error/timeout, and the other agents' updates still land.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypedDict

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.runtime import Runtime

from nodes.base import AgentContext
from nodes.registry import resolve
from state.backends import LockBusy
from state.config import AgentSection
from state.context import Clock, Context


class AgentTask(TypedDict):
    """What ``Send`` (or a worker process) hands to one step of one agent."""

    agent_id: str
    section: dict[str, Any]
    data: dict[str, Any]
    tick: int | None  # None: run by a worker process, outside any tick


async def run_agent(task: AgentTask, runtime: Runtime[Context]) -> dict[str, Any]:
    """The ``run_agent`` node: one step under the agent's lock, or nothing if a worker
    process holds it (that worker reports the agent itself)."""
    backend = runtime.context.backend
    try:
        async with backend.agent_lock(task["agent_id"], wait=0):
            return await run_step(task, backend.url, runtime.context.clock)
    except LockBusy:
        return {}  # a worker process has just claimed it and reports for itself


async def run_step(task: AgentTask, database_url: str, clock: Clock) -> dict[str, Any]:
    """One step inside the graph: its reports as a partial state update."""
    return (await step_context(task, database_url, clock)).update()


async def step_context(task: AgentTask, database_url: str, clock: Clock, *,
                       tags: tuple[str, ...] = (), heartbeat: dict[str, Any] | None = None,
                       callbacks: list[BaseCallbackHandler] | None = None) -> AgentContext:
    """Run one step; the context holds every report of it, failures and timing included.

    Reports are stamped by ``clock``; ``tags`` label the step's trace, ``callbacks`` trace it
    outside a tick, and ``heartbeat`` adds fields to its closing heartbeat (a worker names its
    host and process there)."""
    agent_id = task["agent_id"]
    section = AgentSection.model_validate(task["section"])
    ctx = AgentContext(agent_id, data=task["data"], clock=clock, database_url=database_url)
    started = time.perf_counter()
    status, last_error = "ok", None
    try:
        agent = resolve(agent_id, section).build()
        step = RunnableLambda(agent.step, name=f"agent:{agent_id}")
        labels = [f"agent:{agent_id}", *([f"tick:{task['tick']}"] if task["tick"] else []),
                  *tags]
        run_config: RunnableConfig = {"tags": labels, "metadata": {
            "agent_id": agent_id, "kind": agent.kind, "tick": task["tick"]}}
        if callbacks:
            run_config["callbacks"] = callbacks
        traced = step.ainvoke(ctx, run_config)
        await asyncio.wait_for(traced, timeout=section.budget_s)
    except TimeoutError:
        status, last_error = "timeout", f"step exceeded its budget of {section.budget_s:g} s"
        ctx.error("AgentTimeout", last_error)
    except Exception as exc:  # an agent's failure is data, not a crashed tick
        status, last_error = "error", f"{type(exc).__name__}: {exc}"
        ctx.error(type(exc).__name__, str(exc) or repr(exc))
    step_ms = (time.perf_counter() - started) * 1000
    ctx.metric("step_ms", step_ms, unit="ms")
    extra = {**(heartbeat or {}), "tick": task["tick"], "step_ms": round(step_ms, 3)}
    if last_error:
        extra["last_error"] = last_error[:500]
    ctx.heartbeat(status, **extra)
    return ctx
