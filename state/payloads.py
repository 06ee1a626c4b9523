"""Typed schemas of what is stored: inbox payloads per event kind, state entries per channel.

``state.events`` builds payloads from validated input (``state.models``); these schemas check
them again where they are used, because a row can reach the inbox without the API (another
version, a hand-written INSERT) and a document can reach ``restore_state`` from anywhere. The
fold quarantines a row that does not match its kind's schema and ``restore_state`` refuses a
channel entry that does not match its channel's, so nothing that breaks a reader reaches the
state. Extra keys are allowed (newer writers may add fields); the typed ones must be right.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from state import sketch
from state.models import MAX_METRIC, InvalidInput, OptimizationRecord, Priority

MAX_TIMESTAMP = 1e11  # unix seconds (year 5138)
Timestamp = Annotated[float, Field(gt=0, lt=MAX_TIMESTAMP, allow_inf_nan=False)]
Stamp = Annotated[list[Any], Field(min_length=3, max_length=3)]  # [ts, origin, seq]


class _Schema(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


# -- inbox payloads (state.events) -------------------------------------------------------------

class MetricPayload(_Schema):
    s: str
    v: Annotated[float, Field(ge=-MAX_METRIC, le=MAX_METRIC, allow_inf_nan=False)]
    t: Timestamp
    u: str | None = None


class ErrorPayload(_Schema):
    id: str
    type: str
    norm: str
    msg: str
    a: str
    t: Timestamp
    fp: int = 1  # the fingerprint rules' version (rows written before versions: 1)


class InsightPayload(_Schema):
    id: str
    type: str
    a: str
    p: Priority
    c: dict[str, Any]
    t: Timestamp


class AckPayload(_Schema):
    id: str
    t: Timestamp


class TriagePayload(_Schema):
    id: str
    action: str
    by: str
    t: Timestamp
    until: Timestamp | None = None


class TriageKeyPayload(_Schema):
    k: str
    v: dict[str, Any]
    t: Timestamp


class HeartbeatPayload(_Schema):
    a: str
    status: str
    d: dict[str, Any]
    t: Timestamp


class RegisterPayload(_Schema):
    a: str
    kind: str
    interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None
    schedule: str | None
    meta: dict[str, Any]
    t: Timestamp


class AgentDataPayload(_Schema):
    a: str
    v: dict[str, Any]
    t: Timestamp


class UpdatesPayload(_Schema):
    u: dict[str, Any]
    t: Timestamp


def check_optimization(p: dict[str, Any]) -> None:
    """An optimization payload is an OptimizationRecord (typed by its type) plus ``t``."""
    t = p.get("t")
    TypeAdapter(Timestamp).validate_python(t, strict=True)
    OptimizationRecord.model_validate({k: v for k, v in p.items() if k not in ("t", "stamp")})


# -- state entries per channel (restore_state) --------------------------------------------------

class Registration(_Schema):
    kind: str
    interval_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    schedule: str | None = None
    meta: dict[str, Any] = {}
    at: Timestamp
    stamp: Stamp


class Heartbeat(_Schema):
    at: Timestamp
    status: str
    data: dict[str, Any]
    stamp: Stamp


class AgentEntry(_Schema):
    reg: Registration | None = None
    hb: Heartbeat | None = None
    heartbeats: int = Field(0, ge=0)
    liveness: dict[str, Any] | None = None


class InsightBody(_Schema):
    insight_type: str
    source_agent: str
    priority: Priority
    content: dict[str, Any]
    stamp: Stamp


class InsightEntry(_Schema):
    body: InsightBody | None = None
    occurrences: int = Field(0, ge=0)
    first_seen: Timestamp | None = None
    last_seen: Timestamp | None = None
    acted_upon_at: Timestamp | None = None


class SeriesEntry(_Schema):
    unit: str | None = None
    tiers: dict[str, dict[int, list[Any]]]


class PatternEntry(_Schema):
    error_type: str
    normalized: str
    sample: dict[str, Any] | None = None
    count: int = Field(ge=0)
    first_seen: Timestamp
    last_seen: Timestamp
    sources: list[str]
    tiers: dict[str, dict[int, int]]


class ValueEntry(_Schema):
    value: Any
    stamp: Stamp


class AgentDataEntry(_Schema):
    value: dict[str, Any]
    stamp: Stamp


def _check_optimization_entry(entry: dict[str, Any]) -> None:
    TypeAdapter(Stamp).validate_python(entry.get("stamp"), strict=True)
    OptimizationRecord.model_validate({k: v for k, v in entry.items() if k not in ("stamp", "t")})


_ENTRY: dict[str, Any] = {
    "agents": AgentEntry, "insights": InsightEntry, "metrics": SeriesEntry,
    "error_patterns": PatternEntry, "system": ValueEntry, "config": ValueEntry,
    "agent_data": AgentDataEntry, "triage": AgentDataEntry, "alerts": ValueEntry,
}


# the largest integer a float, a JSON reader and the dashboard's browser hold exactly: stats
# counters add up, and one restored at this size stays far from msgpack's 64-bit limit
MAX_STAT = 2**53


def _is_stat(value: object) -> bool:
    """An int up to ``MAX_STAT`` in size or a finite float (``math.isfinite`` would raise on an
    int beyond a float's range, so an int is judged by its size)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_STAT
    return isinstance(value, float) and math.isfinite(value)


def check_entry(channel: str, key: object, entry: object) -> None:
    """Raise InvalidInput naming ``channel.key`` if an entry does not match its schema."""
    where = f"channels.{channel}.{key}"
    if not isinstance(key, str):
        raise InvalidInput(where, "key must be a string")
    if channel == "stats":
        if not _is_stat(entry):
            raise InvalidInput(where, f"must be a finite number (an integer up to {MAX_STAT:,} "
                                      "in size)")
        return
    if not isinstance(entry, dict):
        raise InvalidInput(where, f"must be an object, got {type(entry).__name__}")
    try:
        if channel == "optimizations":
            _check_optimization_entry(entry)
        elif channel in _ENTRY:
            _ENTRY[channel].model_validate(entry)
    except ValidationError as exc:
        raise InvalidInput(where, reason(exc)) from None
    if channel == "metrics":
        for buckets in entry["tiers"].values():
            for agg in buckets.values():
                try:
                    sketch.load(agg)
                except ValueError as exc:
                    raise InvalidInput(where, f"a bucket is not a sketch: {exc}") from None


def reason(exc: ValidationError) -> str:
    """One line naming the first wrong field of a validation error."""
    err = exc.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if cause is not None and hasattr(cause, "field"):
        return str(cause)
    loc = ".".join(str(p) for p in err["loc"])
    got = "" if err["type"] == "missing" else f" (got {repr(err.get('input'))[:60]})"
    return f"{loc}: {err['msg']}{got}" if loc else f"{err['msg']}{got}"
