"""Validated events: one encoding for both write paths.

Code outside the graph sends these through the inbox (``SharedState``); graph nodes apply them
directly to a ``DeltaBuilder`` (``nodes.base.AgentContext``). Either way the fold sees the same
``(kind, payload)``, so an event means the same thing whichever way it came in.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

import orjson

from state.fingerprint import FINGERPRINT_VERSION, fingerprint_normalized, normalize_message
from state.fold import (
    KIND_AGENT_DATA,
    KIND_CONFIG,
    KIND_ERROR,
    KIND_HEARTBEAT,
    KIND_INSIGHT,
    KIND_METRIC,
    KIND_OPTIMIZATION,
    KIND_REGISTER,
    KIND_SYSTEM,
    KIND_TRIAGE,
    KIND_TRIAGE_KEY,
)
from state.lifecycle import ACTIONS, MAX_MUTE_S, MUTE_TYPE, SEEN
from state.models import (
    PRIORITIES,
    InvalidInput,
    OptimizationRecord,
    PerformanceMetric,
    check_json,
    check_name,
    check_text,
)
from state.redact import is_secret_key

Event = tuple[str, dict[str, Any]]


MAX_POSITIVE = 1e9  # seconds, minutes or hours: far beyond any window or interval kept


def positive(field: str, value: object, limit: float = MAX_POSITIVE) -> float:
    """A positive number up to ``limit`` (windows and intervals: beyond it, times overflow)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= limit:
        raise InvalidInput(field, f"must be a positive finite number up to {limit:g}, "
                           f"got {repr(value)[:40]}")
    return float(value)


def insight_id(insight_type: str, source_agent: str, basis: object) -> str:
    """Dedupe key of an insight: same type, source and key -> same id."""
    raw = basis if isinstance(basis, bytes) else str(basis).encode()
    digest = hashlib.blake2b(f"{insight_type}\n{source_agent}\n".encode() + raw, digest_size=8)
    return f"ins_{digest.hexdigest()}"


def metric(m: PerformanceMetric | Mapping[str, Any], now: float | None = None) -> Event:
    if type(m) is not PerformanceMetric and not isinstance(m, PerformanceMetric):
        if type(m) is not dict and not isinstance(m, Mapping):
            raise InvalidInput("metric", f"expected PerformanceMetric, got {type(m).__name__}")
        m = PerformanceMetric.from_mapping("metric", m)
    ts = m.timestamp if m.timestamp is not None else (now or time.time())
    payload: dict[str, Any] = {"s": m.series, "v": m.value, "t": ts}
    if m.unit:
        payload["u"] = m.unit
    return KIND_METRIC, payload


def error(error_type: str, error_message: str, source_agent: str,
          now: float | None = None) -> Event:
    error_type = check_name("error_type", error_type)
    message = check_text("error_message", error_message)
    source_agent = check_name("source_agent", source_agent, allow_slash=False)
    norm = normalize_message(message)
    return KIND_ERROR, {"id": fingerprint_normalized(error_type, norm), "type": error_type,
                        "norm": norm, "fp": FINGERPRINT_VERSION, "msg": message[:1000],
                        "a": source_agent, "t": now or time.time()}


def insight(insight_type: str, content: Any, source_agent: str, priority: str = "medium",
            dedupe_key: str | None = None, now: float | None = None) -> Event:
    insight_type = check_name("insight_type", insight_type)
    source_agent = check_name("source_agent", source_agent, allow_slash=False)
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise InvalidInput("priority", f"must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    if not isinstance(content, dict):
        raise InvalidInput("content", f"must be a dict, got {type(content).__name__}")
    content = check_json("content", content)
    if dedupe_key is not None and not isinstance(dedupe_key, str):
        raise InvalidInput("dedupe_key", f"must be a string, got {type(dedupe_key).__name__}")
    if dedupe_key is not None:
        check_text("dedupe_key", dedupe_key)
    key = dedupe_key if dedupe_key is not None else content.get("key")
    basis = key if key is not None else orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    return KIND_INSIGHT, {"id": insight_id(insight_type, source_agent, basis),
                          "type": insight_type, "a": source_agent, "p": priority, "c": content,
                          "t": now or time.time()}


def triage(insight_id_: str, action: str, by: str, *, duration_s: float | None = None,
           now: float | None = None) -> Event:
    """A lifecycle action on one insight (``state.lifecycle.ACTIONS``), by a producer or a
    dashboard session; ``mute`` needs ``duration_s``."""
    if not isinstance(action, str) or action not in ACTIONS:  # a list is unhashable
        raise InvalidInput("action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
    t = now or time.time()
    payload: dict[str, Any] = {"id": check_name("insight_id", insight_id_), "action": action,
                               "by": check_name("by", by), "t": t}
    if action == "mute":
        payload["until"] = t + _duration(duration_s)
    return KIND_TRIAGE, payload


def _duration(duration_s: object) -> float:
    seconds = positive("duration_s", duration_s)
    if seconds > MAX_MUTE_S:
        raise InvalidInput("duration_s", f"at most {MAX_MUTE_S / 86400:.0f} days")
    return seconds


def ack(insight_id_: str, by: str = "api", now: float | None = None) -> Event:
    return triage(insight_id_, "acknowledge", by, now=now)


def mute_type(insight_type: str, by: str, duration_s: float | None,
              now: float | None = None) -> Event:
    """Mute every insight of a type for ``duration_s`` (None: unmute it now)."""
    t = now or time.time()
    until = t if duration_s is None else t + _duration(duration_s)
    return KIND_TRIAGE_KEY, {"k": MUTE_TYPE + check_name("insight_type", insight_type),
                             "v": {"until": until, "at": t, "by": check_name("by", by)}, "t": t}


def insights_seen(viewer: str, now: float | None = None) -> Event:
    """``viewer`` has looked at the insights now (the "new since you last looked" mark)."""
    t = now or time.time()
    return KIND_TRIAGE_KEY, {"k": SEEN + check_name("viewer", viewer), "v": {"at": t}, "t": t}


def optimization(record: OptimizationRecord | Mapping[str, Any],
                 now: float | None = None) -> Event:
    if not isinstance(record, OptimizationRecord):
        if not isinstance(record, Mapping):
            raise InvalidInput("record", f"expected OptimizationRecord, got {type(record)}")
        record = OptimizationRecord.from_mapping("record", record)
    payload = record.model_dump()
    payload["t"] = payload.pop("timestamp") or now or time.time()
    return KIND_OPTIMIZATION, payload


def heartbeat(agent_id: str, heartbeat_data: Any, now: float | None = None) -> Event:
    agent_id = check_name("agent_id", agent_id, allow_slash=False)
    if not isinstance(heartbeat_data, dict):
        raise InvalidInput("heartbeat_data", "must be a dict")
    data = check_json("heartbeat_data", heartbeat_data, limit=4096)
    status = check_name("heartbeat_data.status", str(data.get("status", "running")))
    return KIND_HEARTBEAT, {"a": agent_id, "status": status, "d": data, "t": now or time.time()}


def registration(agent_id: Any, kind: str | None, interval_s: float | None,
                 schedule: str | None, meta: dict[str, Any], now: float | None = None) -> Event:
    agent_id = check_name("agent_id", agent_id, allow_slash=False)
    kind = check_name("kind", kind or "agent")
    if interval_s is not None:
        interval_s = positive("interval_s", interval_s)
    if schedule is not None:
        schedule = check_name("schedule", schedule)
    return KIND_REGISTER, {"a": agent_id, "kind": kind, "interval_s": interval_s,
                           "schedule": schedule, "meta": check_json("meta", meta),
                           "t": now or time.time()}


def system_update(updates: Any, now: float | None = None) -> Event:
    if not isinstance(updates, dict) or not updates:
        raise InvalidInput("updates", "must be a non-empty dict")
    for key in updates:
        check_name("updates key", key)
        if is_secret_key(key):
            raise InvalidInput(key, "secrets never go into shared state")
    return KIND_SYSTEM, {"u": check_json("updates", updates), "t": now or time.time()}


def config_update(flat: dict[str, Any], now: float | None = None) -> Event:
    """``flat`` must come from ``state.config.validate_updates``."""
    return KIND_CONFIG, {"u": flat, "t": now or time.time()}


def agent_data(agent_id: str, data: Any, now: float | None = None) -> Event:
    """An agent's small persistent data (cursor, progress): replaces the previous value."""
    agent_id = check_name("agent_id", agent_id, allow_slash=False)
    if not isinstance(data, dict):
        raise InvalidInput("data", "must be a dict")
    return KIND_AGENT_DATA, {"a": agent_id, "v": check_json("data", data), "t": now or time.time()}
