"""The ``run_agent`` node: one step of one agent, fanned out in parallel with ``Send``.

A failing or slow agent never breaks the tick: its exception or timeout becomes an error
pattern and a heartbeat with status error/timeout, and the other agents' updates still land.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypedDict

from langchain_core.runnables import RunnableLambda

from nodes.base import AgentContext
from nodes.registry import resolve
from state.config import AgentSection


class AgentTask(TypedDict):
    """What ``Send`` hands to one ``run_agent`` task."""

    agent_id: str
    section: dict[str, Any]
    data: dict[str, Any]
    tick: int


def agent_node(database_url: str):
    """The ``run_agent`` node for a system whose state lives at ``database_url``."""

    async def run_agent(task: AgentTask) -> dict[str, Any]:
        return await run_step(task, database_url)

    return run_agent


async def run_step(task: AgentTask, database_url: str) -> dict[str, Any]:
    agent_id = task["agent_id"]
    section = AgentSection.model_validate(task["section"])
    ctx = AgentContext(agent_id, data=task["data"], database_url=database_url)
    started = time.perf_counter()
    status, last_error = "ok", None
    try:
        agent = resolve(agent_id, section).build()
        step = RunnableLambda(agent.step, name=f"agent:{agent_id}")
        traced = step.ainvoke(ctx, {"tags": [f"agent:{agent_id}", f"tick:{task['tick']}"],
                                    "metadata": {"agent_id": agent_id, "kind": agent.kind,
                                                 "tick": task["tick"]}})
        await asyncio.wait_for(traced, timeout=section.budget_s)
    except TimeoutError:
        status, last_error = "timeout", f"step exceeded its budget of {section.budget_s:g} s"
        ctx.error("AgentTimeout", last_error)
    except Exception as exc:  # an agent's failure is data, not a crashed tick
        status, last_error = "error", f"{type(exc).__name__}: {exc}"
        ctx.error(type(exc).__name__, str(exc) or repr(exc))
    step_ms = (time.perf_counter() - started) * 1000
    ctx.metric("step_ms", step_ms, unit="ms")
    extra = {"tick": task["tick"], "step_ms": round(step_ms, 3)}
    if last_error:
        extra["last_error"] = last_error[:500]
    ctx.heartbeat(status, **extra)
    return ctx.update()
