"""The coordinator's nodes: plan a tick, fan out to due agents, review what happened.

plan -> (Send run_agent per due agent) -> review. Plan registers configured agents and picks
those whose schedule is due; review judges liveness, turns metrics into insights, scores
health and re-bounds the state against the clock.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Final, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Overwrite, Send

from nodes import rules
from nodes.base import Emitter
from nodes.langsmith_bridge.mirror import judged_by_bridge
from nodes.registry import configured_agents
from nodes.schedule import expected_interval, last_step_at, next_due
from state import events, lifecycle
from state.compact import compact
from state.config import SystemConfig
from state.fingerprint import rekey_patterns
from state.folder import GROWING
from state.queries import agent_liveness, config_of, each
from state.reducers import merge_agents, merge_insights, merge_pattern
from state.schema import SystemState

COORDINATOR = "coordinator"
RUN_AGENT = "run_agent"
REVIEW: Final = "review"


def live_worker(state: dict, agent_id: str, config: SystemConfig, now: float) -> str | None:
    """The worker process (``host:pid``) its heartbeats say runs this agent, if recent (for
    display: once the agent goes stale, and at least ``liveness.worker_claim_s`` after its last
    step, it is no longer shown). Whether a tick steps the agent is decided by the agent lock,
    never by this field."""
    rec = (state.get("agents") or {}).get(agent_id) or {}
    hb = rec.get("hb") or {}
    worker = (hb.get("data") or {}).get("worker")
    if not worker or hb.get("at") is None:
        return None
    reg = rec.get("reg") or {}
    interval = expected_interval(config.agents.get(agent_id), reg.get("interval_s"), now,
                                 reg.get("schedule"))
    claim = max(config.liveness.worker_claim_s, config.liveness.stale_factor * interval)
    return str(worker) if now - hb["at"] <= claim else None


async def plan(state: SystemState, config: RunnableConfig) -> dict[str, Any]:
    """Start a tick: register configured agents, pick the due ones this process runs.

    ``configurable.coordinator_only`` (``bga run --coordinator-only``) runs none: worker
    processes (``bga worker``) run the agents and this tick only coordinates."""
    coordinator_only = bool((config.get("configurable") or {}).get("coordinator_only"))
    st: dict[str, Any] = dict(state)
    now = time.time()
    cfg = config_of(st)
    specs, broken = configured_agents(cfg)
    out = Emitter(now)
    agents = st.get("agents") or {}
    for agent_id, spec in specs.items():
        reg = (agents.get(agent_id) or {}).get("reg") or {}
        interval = spec.section.interval_s
        if reg.get("kind") != spec.kind or reg.get("interval_s") != interval \
                or reg.get("schedule") != spec.section.cron:
            out.emit(events.registration(agent_id, spec.kind, interval, spec.section.cron,
                                         {"configured": True}, now=now))
    for agent_id, reason in broken.items():
        out.emit(events.insight("agent_misconfigured", {"agent": agent_id, "reason": reason,
                                                        "summary": reason},
                                COORDINATOR, "high", f"agent_misconfigured:{agent_id}", now=now))
    # shown only: a heartbeat's "worker" field is a claim anyone can write. What keeps this
    # tick off an agent a worker runs is the agent lock the worker holds (run_agent skips it)
    workers = {a: w for a in specs if (w := live_worker(st, a, cfg, now))}
    due = [] if coordinator_only else sorted(
        a for a, spec in specs.items() if next_due(spec.section, last_step_at(st, a)) <= now)
    previous = st.get("tick") or {}
    n = int(previous.get("n", 0)) + 1
    update = out.update()
    update["tick"] = {"n": n, "started_at": now, "due": due, "workers": workers,
                      "coordinator": {"host": socket.gethostname(), "pid": os.getpid(),
                                      "coordinator_only": coordinator_only},
                      "previous_started_at": previous.get("started_at"), "stamp": out.stamp()}
    return update


def route(state: SystemState) -> list[Send] | Literal["review"]:
    """Fan out to the due agents in parallel, or go straight to review."""
    tick = state.get("tick") or {}
    due = tick.get("due") or []
    if not due:
        return REVIEW
    config = config_of(dict(state))
    data = state.get("agent_data") or {}
    return [Send(RUN_AGENT, {"agent_id": a,
                             "section": config.agents[a].model_dump(by_alias=True),
                             "data": (data.get(a) or {}).get("value") or {},
                             "tick": tick["n"]})
            for a in due if a in config.agents]


def _clear_alarms(state: dict, agent_id: str, kinds: tuple[str, ...], now: float,
                  out: Emitter) -> None:
    """Resolve an agent's unresolved liveness alarms (only those that exist)."""
    insights = state.get("insights") or {}
    for kind in kinds:
        iid = events.insight_id(f"agent_{kind}", COORDINATOR, f"agent_{kind}:{agent_id}")
        rec = insights.get(iid)
        if rec and rec.get("body") and lifecycle.view(rec, now, {})["status"] != "resolved":
            out.emit(events.triage(iid, "resolve", COORDINATOR, now=now))


def _liveness(state: dict, config: SystemConfig, now: float, out: Emitter
              ) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """Liveness verdicts (``state.queries.agent_liveness``) that changed, agents to purge, and
    every kept agent's verdict; stale and dead agents raise alarms that clear on recovery."""
    changed: dict[str, Any] = {}
    purge: list[str] = []
    verdicts: dict[str, str] = {}
    lv = config.liveness
    for agent_id, rec in sorted((state.get("agents") or {}).items()):
        judged = agent_liveness(agent_id, rec, config, now)
        verdict, age, interval = judged["verdict"], judged["age_s"], judged["expected_interval_s"]
        if verdict == "unknown":
            continue
        before = (rec.get("liveness") or {}).get("value", "active")
        if verdict == "dead" and age > lv.dead_factor * interval + lv.purge_after_s:
            purge.append(agent_id)  # forgotten: its alarms go with it
            _clear_alarms(state, agent_id, ("stale", "dead"), now, out)
            continue
        verdicts[agent_id] = verdict
        evidence = {"agent": agent_id, "last_heartbeat_age_s": round(age, 1),
                    "expected_interval_s": interval}
        if verdict != before:
            changed[agent_id] = {"liveness": {"value": verdict, "since": now,
                                              "stamp": out.stamp()}, "heartbeats": 0}
        if verdict == "dead" and before == "stale":
            _clear_alarms(state, agent_id, ("stale",), now, out)  # superseded by the dead alarm
        if verdict in ("stale", "dead"):
            out.emit(events.insight(f"agent_{verdict}", {
                **evidence, "summary": f"{agent_id} has not reported for {age:.0f} s "
                                       f"(expected every {interval:.0f} s)"},
                COORDINATOR, "high" if verdict == "stale" else "critical",
                f"agent_{verdict}:{agent_id}", now=now))
        elif before in ("stale", "dead"):
            _clear_alarms(state, agent_id, ("stale", "dead"), now, out)  # recovered
            out.emit(events.insight("agent_recovered", {**evidence,
                                                        "summary": f"{agent_id} is back"},
                                    COORDINATOR, "low", f"agent_recovered:{agent_id}", now=now))
    return changed, purge, verdicts


def expected_sources(state: dict, config: SystemConfig, now: float) -> set[str]:
    """Sources expected to report metrics: registered agents that are alive (a stale or dead
    one already has its own alarm) and the projects configured for an agent
    (``agents.<id>.options.projects``), as ``<agent>/<project>``."""
    out = {a for a, rec in (state.get("agents") or {}).items()
           if agent_liveness(a, rec, config, now)["verdict"] == "active"}
    for agent_id, section in config.agents.items():
        projects = section.options.get("projects")
        if isinstance(projects, list):
            out.update(f"{agent_id}/{p}" for p in projects if isinstance(p, str))
    return out


# Points a health score loses per item; each deduction is listed with its reason.
HEALTH_WEIGHTS = {"dead": 30.0, "stale": 15.0, "critical": 20.0, "high": 8.0}


def _health(state: dict, live: dict[str, str], now: float) -> dict[str, Any]:
    """100 minus one listed deduction per dead or stale agent and per active (open or
    regressed, not muted) critical or high insight; ``info``, ``low`` and ``medium`` insights
    cost nothing."""
    mutes = lifecycle.type_mutes(state)
    deductions: list[dict[str, Any]] = []
    for agent_id, verdict in sorted(live.items()):
        if verdict in ("dead", "stale"):
            deductions.append({"points": HEALTH_WEIGHTS[verdict], "kind": f"{verdict}_agent",
                               "ref": agent_id, "reason": f"agent {agent_id} is {verdict}"})

    def insight_deduction(iid: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        body = rec.get("body")
        if not body or body["priority"] not in ("critical", "high") \
                or not lifecycle.is_active(rec, now, mutes):
            return None
        summary = (body.get("content") or {}).get("summary") or body["insight_type"]
        return {"points": HEALTH_WEIGHTS[body["priority"]],
                "kind": f"{body['priority']}_insight", "ref": iid,
                "reason": f"open {body['priority']} insight: {summary}"[:200]}

    # a malformed entry is skipped (counted, logged once), never a failed tick
    deductions += each("insights", sorted((state.get("insights") or {}).items(),
                                          key=lambda kv: str(kv[0])), insight_deduction)
    deductions.sort(key=lambda d: (-d["points"], d["kind"], d["ref"]))
    score = max(0.0, 100.0 - sum(d["points"] for d in deductions))
    counts: dict[str, int] = {}
    for d in deductions:
        counts[d["kind"]] = counts.get(d["kind"], 0) + 1
    labels = {"stale_agent": "stale agents", "dead_agent": "dead agents",
              "critical_insight": "critical insights", "high_insight": "high insights"}
    reasons = [f"{counts[k]} {label}" for k, label in labels.items() if counts.get(k)]
    status = "healthy" if score >= 80 else "degraded" if score >= 50 else "critical"
    return {"score": score, "status": status, "reasons": reasons,
            "deductions": deductions[:50], "at": now}


async def review(state: SystemState) -> dict[str, Any]:
    """Close the tick: liveness, insight rules, health score, bounded state."""
    st: dict[str, Any] = dict(state)
    now = time.time()
    config = config_of(st)
    out = Emitter(now)
    changed, purge, verdicts = _liveness(st, config, now, out)
    tick = st.get("tick") or {}
    since = tick.get("previous_started_at") or tick.get("started_at") or now
    st["error_patterns"] = rekey_patterns(st.get("error_patterns") or {}, merge_pattern)
    bridge_series, bridge_sources = judged_by_bridge(st)
    insights = st.get("insights") or {}
    for f in rules.evaluate(st, now, since, config.rules, config.liveness,
                            expected_sources=expected_sources(st, config, now),
                            skip_series=bridge_series.__contains__,
                            skip_sources=bridge_sources.__contains__):
        event = events.insight(f.insight_type, f.content, COORDINATOR, f.priority, f.key,
                               now=now)
        if f.once and event[1]["id"] in insights:
            continue  # fired once for this spell already
        out.emit(event)
    update = out.update()
    agents_delta = merge_agents(update.pop("agents", None), changed)
    if purge:
        kept = {a: r for a, r in (st.get("agents") or {}).items() if a not in purge}
        update["agents"] = Overwrite(merge_agents(kept, agents_delta))
        update["agent_data"] = Overwrite({a: v for a, v in (st.get("agent_data") or {}).items()
                                          if a not in purge})
    elif agents_delta:
        update["agents"] = agents_delta
    started = tick.get("started_at") or now
    update["system"] = {
        "health": {"value": _health(st, verdicts, now), "stamp": out.stamp()},
        "last_tick": {"value": {"n": tick.get("n", 0), "started_at": started,
                                "duration_ms": round((now - started) * 1000, 3),
                                "agents_run": tick.get("due") or [],
                                "agents_on_workers": tick.get("workers") or {},
                                "coordinator": tick.get("coordinator") or {}},
                      "stamp": out.stamp()},
    }
    growing = {ch: st.get(ch) or {} for ch in GROWING}
    growing["insights"] = merge_insights(growing["insights"], update.pop("insights", None))
    for ch, value in compact(growing, now, config.retention).items():
        update[ch] = Overwrite(value)
    update["stats"] = {"ticks": 1, "last_tick_at": now}
    return update
