"""The one typed state of the ``system`` thread.

Values are plain dicts and lists (not model instances) so checkpoints are compact msgpack and
every reducer is a pure function of plain data. Their shapes are the TypedDicts below, one
per record, each field saying how its reducer merges it. ``state.models`` validates what comes
in; ``state.queries`` turns this into read models.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any, get_type_hints

from typing_extensions import TypedDict  # pydantic validates these on Python 3.11 too

from state import reducers, sketch

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


Stamp = list
"""``[ts, origin, seq]``: when, from which inbox stream (0: a node of the graph), in what order.
Stamps order last-writer-wins registers (``reducers.lww``)."""


class Register(TypedDict):
    """A last-writer-wins value: of two, the one with the newer ``stamp`` is kept."""

    value: Any
    stamp: Stamp


# -- agents -------------------------------------------------------------------------------------


class Registration(TypedDict):
    kind: str
    interval_s: float | None
    schedule: str | None
    """Cron expression, if the agent runs on one (its expected interval comes from it)."""
    meta: dict[str, Any]
    at: float
    stamp: Stamp


class Heartbeat(TypedDict):
    at: float
    status: str
    data: dict[str, Any]
    """What the agent said; a step's heartbeat carries ``step_ms`` (``nodes.schedule``)."""
    stamp: Stamp


class Verdict(TypedDict):
    value: str
    """``active``, ``stale`` or ``dead`` (``state.queries.agent_liveness``)."""
    since: float
    stamp: Stamp


class AgentRecord(TypedDict, total=False):
    """One agent (``reducers.merge_agent``)."""

    reg: Registration | None
    """Its registration (None until one arrives): the newest stamp wins."""
    hb: Heartbeat | None
    """Its latest heartbeat (None until one arrives): the newest stamp wins, so a late, older
    one never replaces it."""
    liveness: Verdict | None
    """The coordinator's last liveness verdict (None until it judged one): the newest stamp
    wins."""
    heartbeats: int
    """Heartbeats received: the counts of both sides add up."""


# -- metrics and error patterns ------------------------------------------------------------------


class SeriesRecord(TypedDict):
    """One metric series (``reducers.merge_series``)."""

    unit: str | None
    """The greater of both sides' units (any unit beats none)."""
    tiers: dict[str, dict[int, sketch.Agg]]
    """Tier ("1m", "1h", "1d") -> bucket start -> sketch: sketches of the same bucket merge
    (count, sum, min, max, log bins); buckets of either side are kept."""


class Sample(TypedDict):
    message: str
    agent: str
    stamp: Stamp


class PatternRecord(TypedDict, total=False):
    """One fingerprinted error pattern (``reducers.merge_pattern``)."""

    error_type: str
    normalized: str
    """The normalized message: the one of the newer fingerprint version."""
    fp: int
    """Fingerprint version: the lower one wins (a pattern holding old counts is re-keyed)."""
    sample: Sample | None
    """The newest occurrence's message: the newest stamp wins."""
    count: int
    """Occurrences: both sides add up."""
    first_seen: float
    """The earlier of both sides."""
    last_seen: float
    """The later of both sides."""
    sources: list[str]
    """Agents it came from: a sorted union, at most ``reducers.MAX_SOURCES``."""
    tiers: dict[str, dict[int, int]]
    """Tier -> bucket start -> occurrences: counts of the same bucket add up."""


# -- insights -----------------------------------------------------------------------------------


class InsightBody(TypedDict):
    insight_type: str
    source_agent: str
    priority: str
    content: dict[str, Any]
    stamp: Stamp


class InsightStatus(TypedDict):
    s: str
    """``acknowledged``, ``resolved`` or ``open`` (``state.lifecycle``)."""
    at: float
    by: str
    stamp: Stamp


class InsightMute(TypedDict):
    until: float
    at: float
    by: str
    stamp: Stamp


class InsightRecord(TypedDict, total=False):
    """One insight, deduplicated by id (``reducers.merge_insight``)."""

    body: InsightBody | None
    """Its content (None while only a lifecycle action on it has arrived): the newest stamp
    wins."""
    occurrences: int
    """How often it fired: both sides add up."""
    first_seen: float | None
    """The earlier of both sides."""
    last_seen: float | None
    """The later of both sides."""
    status: InsightStatus
    """Its lifecycle status: the newest stamp wins."""
    mute: InsightMute
    """Muted until when: the newest stamp wins."""
    history: list[dict[str, Any]]
    """Lifecycle actions: the newest ``reducers.MAX_HISTORY`` of both sides' union."""


# -- optimizations, ticks -----------------------------------------------------------------------


class OptimizationEntry(TypedDict, total=False):
    """A version of an optimization record (``state.models.OptimizationRecord``'s fields, ``t``
    and ``stamp``); of two versions of one record id, the newer stamp wins."""

    record_id: str
    optimization_type: str
    target: str
    before: dict[str, Any]
    after: dict[str, Any]
    outcome: str
    success: bool
    source_agent: str
    details: dict[str, Any]
    t: float
    stamp: Stamp


class TickRecord(TypedDict, total=False):
    """The current or last tick, written by ``plan``; the newest stamp wins."""

    n: int
    started_at: float
    previous_started_at: float | None
    due: list[str]
    """Agents this tick steps."""
    workers: dict[str, str]
    """Agent -> the worker process (``host:pid``) its fresh heartbeats name."""
    coordinator: dict[str, Any]
    """The process that ran the tick: host, pid, coordinator_only."""
    stamp: Stamp


class SystemState(TypedDict, total=False):
    """Shared state of the background-agents system. Each channel's reducer is the
    ``Annotated`` metadata of its type (LangGraph reads it from there, and so does
    ``REDUCERS``)."""

    agents: Annotated[dict[str, AgentRecord], reducers.merge_agents]
    """Agent id -> registration, latest heartbeat, liveness verdict and heartbeat count: per
    agent, ``AgentRecord``'s fields merge as documented there."""

    metrics: Annotated[dict[str, SeriesRecord], reducers.merge_metrics]
    """Series "agent/name" -> time-bucketed sketches: series present on both sides merge
    bucket by bucket (``SeriesRecord``); never a list of raw values."""

    error_patterns: Annotated[dict[str, PatternRecord], reducers.merge_error_patterns]
    """Pattern id (fingerprint) -> pattern: patterns present on both sides merge
    (``PatternRecord``): counts add up, first/last seen are min/max, the newest sample wins."""

    insights: Annotated[dict[str, InsightRecord], reducers.merge_insights]
    """Insight id (dedupe key) -> insight: a repeated insight bumps ``occurrences`` instead
    of adding a row; status and mute are LWW registers, history a bounded set
    (``InsightRecord``, ``state.lifecycle``)."""

    triage: Annotated[dict[str, Register], reducers.merge_lww_map]
    """``mute_type:<insight type>`` / ``seen:<viewer>`` -> register: mutes of a whole insight
    type and when each viewer last looked at the insights; per key, the newest stamp wins."""

    optimizations: Annotated[dict[str, OptimizationEntry], reducers.merge_records]
    """Record id -> its newest version (``OptimizationEntry``): per id, the newest stamp
    wins."""

    system: Annotated[dict[str, Register], reducers.merge_lww_map]
    """System-state key -> register: per key, the newest stamp wins."""

    config: Annotated[dict[str, Register], reducers.merge_lww_map]
    """Dotted config key -> register: per key, the newest stamp wins."""

    agent_data: Annotated[dict[str, Register], reducers.merge_lww_map]
    """Agent id -> register of the agent's own small persistent data (cursors, progress):
    per agent, the newest stamp wins."""

    tick: Annotated[TickRecord, reducers.lww]
    """The current or last tick (``TickRecord``): the newest stamp wins."""

    inbox: Annotated[dict[int, int], reducers.merge_watermarks]
    """Inbox stream id -> highest sequence number folded into this state: per stream, the
    greater wins. Kept only until those rows are deleted from the inbox, so it stays as small
    as one fold batch."""

    alerts: Annotated[dict[str, Register], reducers.merge_lww_map]
    """Alert delivery (``nodes.notify``): ``n:<channel>:<insight id>`` -> register of what was
    last sent for that insight on that channel, ``o:<alert key>`` -> register of an alert
    waiting in the outbox (copied to the ``bga_outbox`` table by the sender); per key, the
    newest stamp wins."""

    stats: Annotated[dict[str, float], reducers.merge_stats]
    """Bookkeeping: counters (events folded, quarantined, dropped as too old, folds, ticks)
    add up; ``*_at`` timestamps keep the later."""


Reducer = Callable[[Any, Any], Any]


def _reducers() -> dict[str, Reducer]:
    """Channel -> reducer, read from ``SystemState``'s annotations (the one place they live)."""
    hints = get_type_hints(SystemState, include_extras=True)
    return {channel: hint.__metadata__[-1] for channel, hint in hints.items()}


REDUCERS: dict[str, Reducer] = _reducers()
CHANNELS: tuple[str, ...] = tuple(REDUCERS)


def apply_update(state: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """What LangGraph does with a node's partial update, as a plain function (for reads)."""
    out = dict(state)
    for key, value in update.items():
        out[key] = REDUCERS[key](out.get(key), value)
    return out
