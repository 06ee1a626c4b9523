"""The one typed state of the ``system`` thread.

Values are plain dicts and lists (not model instances) so checkpoints are compact msgpack and
every reducer is a pure function of plain data. ``state.models`` validates what comes in;
``state.queries`` turns this into read models.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from state import reducers

SYSTEM_THREAD = "system"
_THREAD_NAMESPACE = uuid.UUID("6f1c1f2e-4b8a-5d0e-9a57-0c1d2b3a4f50")


def thread_uuid(name: str) -> str:
    """Checkpoint thread id of a named thread: a stable UUID (``langgraph dev`` requires UUIDs),
    so ``system`` is the same thread for ``bga``, the dashboard and the dev server."""
    try:
        return str(uuid.UUID(name))
    except ValueError:
        return str(uuid.uuid5(_THREAD_NAMESPACE, name))

# Metric and error buckets: (tier name, width in seconds). Widths are fixed; how many buckets of
# each tier are kept is configuration (``retention.*``).
TIERS: tuple[tuple[str, int], ...] = (("1m", 60), ("1h", 3600), ("1d", 86400))
TIER_WIDTH: dict[str, int] = dict(TIERS)


class SystemState(TypedDict, total=False):
    """Shared state of the background-agents system."""

    agents: Annotated[dict[str, dict[str, Any]], reducers.merge_agents]
    """Agent id -> {"reg", "hb", "liveness", "heartbeats"}: registration, latest heartbeat and
    liveness verdict are last-writer-wins by stamp; the heartbeat count adds up."""

    metrics: Annotated[dict[str, dict[str, Any]], reducers.merge_metrics]
    """Series "agent/name" -> {"unit", "tiers": {tier: {bucket_start: sketch}}}: sketches of the
    same bucket merge (count, sum, min, max, log bins); never a list of raw values."""

    error_patterns: Annotated[dict[str, dict[str, Any]], reducers.merge_error_patterns]
    """Pattern id -> fingerprinted pattern: per-bucket counts add up, first/last seen are
    min/max, the sample is the newest, source agents are a bounded sorted union."""

    insights: Annotated[dict[str, dict[str, Any]], reducers.merge_insights]
    """Insight id (dedupe key) -> {"body", "occurrences", "first_seen", "last_seen", "status",
    "mute", "history"}: a repeated insight bumps occurrences instead of adding a row; status
    and mute are LWW registers, history a bounded set (see ``state.lifecycle``)."""

    triage: Annotated[dict[str, dict[str, Any]], reducers.merge_lww_map]
    """``mute_type:<insight type>`` / ``seen:<viewer>`` -> {"value", "stamp"}: mutes of a whole
    insight type and when each viewer last looked at the insights; last writer wins."""

    optimizations: Annotated[dict[str, dict[str, Any]], reducers.merge_records]
    """Record id -> newest version of an optimization record (LWW by stamp)."""

    system: Annotated[dict[str, dict[str, Any]], reducers.merge_lww_map]
    """System-state key -> {"value", "stamp"}: last writer wins per key."""

    config: Annotated[dict[str, dict[str, Any]], reducers.merge_lww_map]
    """Dotted config key -> {"value", "stamp"}: last writer wins per key."""

    agent_data: Annotated[dict[str, dict[str, Any]], reducers.merge_lww_map]
    """Agent id -> {"value", "stamp"}: an agent's own small persistent data (cursors, progress),
    last writer wins."""

    tick: Annotated[dict[str, Any], reducers.lww]
    """The current or last tick: {"n", "started_at", "due", "workers" (agent -> worker process
    running it), "coordinator" (host, pid, coordinator_only), "stamp"}; newest stamp wins."""

    inbox: Annotated[dict[int, int], reducers.merge_watermarks]
    """Inbox stream id -> highest sequence number folded into this state (max-merge). Kept only
    until those rows are deleted from the inbox, so it stays as small as one fold batch."""

    alerts: Annotated[dict[str, dict[str, Any]], reducers.merge_lww_map]
    """Alert delivery (``nodes.notify``): ``n:<channel>:<insight id>`` -> what was last sent
    for that insight on that channel, ``o:<alert key>`` -> an alert waiting in the outbox
    (copied to the ``bga_outbox`` table by the sender); {"value", "stamp"}, last writer wins."""

    stats: Annotated[dict[str, float], reducers.merge_stats]
    """Bookkeeping counters (events folded, quarantined, dropped as too old, folds, ticks) that
    add up, and ``*_at`` timestamps that keep the latest."""


CHANNELS: tuple[str, ...] = tuple(SystemState.__annotations__)

REDUCERS: dict[str, Callable[[Any, Any], Any]] = {
    "agents": reducers.merge_agents,
    "metrics": reducers.merge_metrics,
    "error_patterns": reducers.merge_error_patterns,
    "insights": reducers.merge_insights,
    "triage": reducers.merge_lww_map,
    "optimizations": reducers.merge_records,
    "system": reducers.merge_lww_map,
    "config": reducers.merge_lww_map,
    "agent_data": reducers.merge_lww_map,
    "tick": reducers.lww,
    "inbox": reducers.merge_watermarks,
    "alerts": reducers.merge_lww_map,
    "stats": reducers.merge_stats,
}


def apply_update(state: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """What LangGraph does with a node's partial update, as a plain function (for reads)."""
    out = dict(state)
    for key, value in update.items():
        out[key] = REDUCERS[key](out.get(key), value)
    return out
