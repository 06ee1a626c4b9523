"""When an agent is due (interval or cron). How often it is expected to report is
``state.queries.expected_interval``, the liveness rule's."""

from __future__ import annotations

from typing import Any

from croniter import croniter

from state.config import AgentSection
from state.queries import DEFAULT_INTERVAL_S, expected_interval

__all__ = ["DEFAULT_INTERVAL_S", "expected_interval", "last_step_at", "next_due"]


def next_due(section: AgentSection, last_run: float | None) -> float:
    """Unix time at which the agent should next run; 0 if it never ran."""
    if last_run is None:
        return 0.0
    if section.cron:
        return float(croniter(section.cron, last_run).get_next(float))
    return last_run + (section.interval_s or DEFAULT_INTERVAL_S)


def last_step_at(values: dict[str, Any], agent_id: str) -> float | None:
    """When this agent last finished a step, in the graph or in a worker: its heartbeat if
    that came from a step (steps report ``step_ms``; heartbeats sent through the API do not)."""
    hb = (((values.get("agents") or {}).get(agent_id) or {}).get("hb")) or {}
    return hb.get("at") if "step_ms" in (hb.get("data") or {}) else None
