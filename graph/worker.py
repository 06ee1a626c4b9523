"""``bga worker``: run chosen agents in their own process, on any host that reaches the database.

A worker first claims each of its agents: the agent's lock lets one process at a time step it,
so two workers, or a worker and a tick, never step it from the same cursor (a second worker for
the same agent stands by to take over). Each agent then steps on its own schedule (its config
section's interval or cron, re-read before every step) with the same step code as the graph's
``run_agent`` node, and reports through the SharedState API: a step's metrics, errors,
insights, heartbeat and new data (its cursor) go into the inbox in ONE transaction. A worker
killed mid-step loses that step whole and the next one redoes it from the old cursor, so
nothing is counted twice. Its heartbeats name the worker (``host:pid``); while they are fresh
the coordinator leaves the agent to it, and once they go stale a coordinator that runs agents
(not ``--coordinator-only``) takes the agent back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from graph.scheduler import Backoff, hold_or_stand_by
from graph.tracing import local_tracer
from nodes.agent_step import AgentTask, step_context
from nodes.schedule import last_step_at, next_due
from state.api import SharedState
from state.config import SystemConfig
from state.queries import config_of

POLL_S = 5.0  # an idle or disabled agent looks at its config at least this often

Notify = Callable[[str], None]


def worker_identity() -> dict[str, Any]:
    """What a worker's heartbeats say about it: the dashboard groups agents by it."""
    host, pid = socket.gethostname(), os.getpid()
    return {"worker": f"{host}:{pid}", "host": host, "pid": pid}


def parse_agents(spec: str, config: SystemConfig) -> list[str]:
    """``NAME[,NAME]`` checked against the configured agents; ValueError names the bad ones."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError("--agents names no agent (expected NAME[,NAME...])")
    unknown = sorted(set(names) - set(config.agents))
    if unknown:
        raise ValueError(f"unknown agent(s) {', '.join(unknown)} in --agents; configured: "
                         f"{', '.join(sorted(config.agents)) or 'none'}")
    return list(dict.fromkeys(names))


@dataclass
class WorkerReport:
    steps: dict[str, int] = field(default_factory=dict)
    failures: int = 0


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


async def _agent_loop(shared: SharedState, agent_id: str, stop: asyncio.Event, notify: Notify,
                      report: WorkerReport, max_steps: int | None) -> None:
    """Claim the agent (its lock: one process steps it at a time), then step it; stand by
    while another process has it, and claim it again if the lock's lease is lost. Database
    trouble (server restarting, connection lost) is one line, a back-off and another try."""
    backend = shared.backend
    backoff = Backoff(notify, backend.where)
    while not stop.is_set() and not _done(report, agent_id, max_steps):
        try:
            claim = await hold_or_stand_by(
                lambda wait: backend.agent_lock(agent_id, wait=wait), stop, notify,
                f"{agent_id}: running in another process; standing by to take over",
                f"{agent_id}: took over")
        except Exception as exc:
            report.failures += 1
            await backoff.trouble(exc, stop, f"{agent_id}: cannot claim the agent")
            continue
        if claim is None:
            return
        try:
            # a tick that ran this agent before the claim holds the fold lock until its
            # checkpoint (with the agent's new cursor) is written: read only after that
            async with backend.fold_lock(wait=None):
                pass
            await _steps(shared, agent_id, stop, notify, report, max_steps, backoff)
        except Exception as exc:
            report.failures += 1
            await backoff.trouble(exc, stop, f"{agent_id}: standing down")
        finally:
            with contextlib.suppress(Exception):  # its session may be gone already
                await claim.__aexit__(None, None, None)


def _done(report: WorkerReport, agent_id: str, max_steps: int | None) -> bool:
    return max_steps is not None and report.steps[agent_id] >= max_steps


async def _steps(shared: SharedState, agent_id: str, stop: asyncio.Event, notify: Notify,
                 report: WorkerReport, max_steps: int | None, backoff: Backoff) -> None:
    identity = worker_identity()
    lock = f"agent-{agent_id}"
    last: float | None = None
    first = True
    while not stop.is_set() and not _done(report, agent_id, max_steps):
        if not await shared.backend.holds(lock):
            notify(f"{agent_id}: lost its lock (lease lapsed or database session ended); "
                   "claiming it again")
            return
        try:
            values = await shared.read()
        except Exception as exc:  # the database may be restarting: keep trying, say so
            report.failures += 1
            await backoff.trouble(exc, stop, f"{agent_id}: cannot read the state")
            continue
        section = config_of(values).agents.get(agent_id)
        if section is None or not section.enabled:
            if first:
                notify(f"{agent_id}: not configured or disabled; waiting for its config")
            first = False
            await _sleep(stop, POLL_S)
            continue
        first = False
        if last is None:
            last = last_step_at(values, agent_id)
        wait = next_due(section, last) - time.time()
        if wait > 0:
            await _sleep(stop, min(wait, POLL_S))
            continue
        data = (((values.get("agent_data") or {}).get(agent_id)) or {}).get("value") or {}
        task = AgentTask(agent_id=agent_id, section=section.model_dump(by_alias=True),
                         data=data, tick=None)
        tracer = local_tracer(shared.backend)
        started = time.time()
        ctx = await step_context(task, shared.backend.url, tags=(f"worker:{identity['worker']}",),
                                 heartbeat=identity, callbacks=[tracer] if tracer else None)
        try:
            await shared.write_events(ctx.outbox())  # the whole step, or none of it
        except Exception as exc:
            report.failures += 1
            await backoff.trouble(exc, stop, f"{agent_id}: step not recorded, will redo it")
            continue
        finally:
            if tracer is not None:
                await tracer.flush()
        backoff.ok()
        last = started
        report.steps[agent_id] += 1


async def run(shared: SharedState, agents: Sequence[str], *, stop: asyncio.Event,
              notify: Notify = print, max_steps: int | None = None) -> WorkerReport:
    """Step ``agents`` until ``stop`` is set (or each has run ``max_steps``)."""
    report = WorkerReport(steps=dict.fromkeys(agents, 0))
    await asyncio.gather(*(_agent_loop(shared, a, stop, notify, report, max_steps)
                           for a in agents))
    return report
