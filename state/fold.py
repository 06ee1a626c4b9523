"""Turn inbox rows into one partial state update (a delta) for the reducers.

This is the hot path of the write path: rows are accumulated in mutable builders and frozen
once, so folding costs O(rows + distinct buckets), not O(rows x state size). The same function
serves the fold node (which writes the delta) and readers (which overlay unfolded rows on the
last checkpoint for read-your-writes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from state import payloads, reducers, sketch
from state.config import effective
from state.lifecycle import ACTIONS
from state.schema import TIERS

KIND_METRIC = "metric"
KIND_ERROR = "error"
KIND_INSIGHT = "insight"
KIND_ACK = "ack"
KIND_OPTIMIZATION = "opt"
KIND_HEARTBEAT = "hb"
KIND_REGISTER = "reg"
KIND_SYSTEM = "sys"
KIND_CONFIG = "cfg"
KIND_AGENT_DATA = "data"
KIND_TRIAGE = "triage"  # a lifecycle action on one insight (acknowledge, resolve, mute, ...)
KIND_TRIAGE_KEY = "triage_kv"  # a type mute or a "last looked" marker (the triage channel)

_MINUTE = TIERS[0][1]


@dataclass
class InboxRow:
    stream: int
    seq: int
    kind: str
    payload: bytes | str


@dataclass
class Quarantined:
    row: InboxRow
    reason: str


@dataclass
class FoldResult:
    delta: dict[str, Any]
    watermarks: dict[int, int]
    folded: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)


class _ErrorAcc:
    __slots__ = ("count", "error_type", "first", "fp", "last", "minutes", "normalized", "sample",
                 "srcs")

    def __init__(self, error_type: str, normalized: str, fp: int) -> None:
        self.fp = fp
        self.error_type = error_type
        self.normalized = normalized
        self.count = 0
        self.first = float("inf")
        self.last = float("-inf")
        self.minutes: dict[int, int] = {}
        self.sample: dict | None = None
        self.srcs: set[str] = set()


class DeltaBuilder:
    """Accumulates events; ``build()`` returns the delta the reducers merge."""

    def __init__(self) -> None:
        self._metrics: dict[tuple[str, int], sketch.Accumulator] = {}
        self._units: dict[str, str] = {}
        self._errors: dict[str, _ErrorAcc] = {}
        self._maps: dict[str, dict[str, Any]] = {}
        self._merge: dict[str, Callable[[dict, dict], dict | None]] = {
            "insights": reducers.merge_insight,
            "optimizations": reducers.lww,
            "agents": reducers.merge_agent,
            "system": reducers.lww,
            "config": reducers.lww,
            "agent_data": reducers.lww,
            "triage": reducers.lww,
        }

    # -- events ---------------------------------------------------------------------------
    def metric(self, series: str, value: float, ts: float, unit: str | None = None) -> None:
        key = (series, int(ts) - int(ts) % _MINUTE)
        acc = self._metrics.get(key)
        if acc is None:
            acc = self._metrics[key] = sketch.Accumulator()
        acc.add(value)
        if unit:
            self._units[series] = max(unit, self._units.get(series, ""))

    def error(
        self, pid: str, error_type: str, normalized: str, message: str, agent: str, ts: float,
        stamp: list, fp: int = 1,
    ) -> None:
        acc = self._errors.get(pid)
        if acc is None:
            acc = self._errors[pid] = _ErrorAcc(error_type, normalized, fp)
        acc.fp = min(acc.fp, fp)
        acc.count += 1
        acc.first = min(acc.first, ts)
        acc.last = max(acc.last, ts)
        minute = int(ts) - int(ts) % _MINUTE
        acc.minutes[minute] = acc.minutes.get(minute, 0) + 1
        acc.sample = reducers.lww(acc.sample, {"message": message, "agent": agent, "stamp": stamp})
        if len(acc.srcs) < reducers.MAX_SOURCES or agent in acc.srcs:
            acc.srcs.add(agent)
        else:
            acc.srcs = set(sorted(acc.srcs | {agent})[: reducers.MAX_SOURCES])

    def put(self, channel: str, key: str, value: dict) -> None:
        """Merge one keyed record into a map channel (insights, agents, config, ...)."""
        m = self._maps.setdefault(channel, {})
        m[key] = self._merge[channel](m[key], value) if key in m else value

    # -- result ---------------------------------------------------------------------------
    def build(self) -> dict[str, Any]:
        delta: dict[str, Any] = {}
        if self._metrics:
            delta["metrics"] = self._build_metrics()
        if self._errors:
            delta["error_patterns"] = {
                pid: {
                    "error_type": e.error_type,
                    "normalized": e.normalized,
                    "fp": e.fp,
                    "sample": e.sample,
                    "count": e.count,
                    "first_seen": e.first,
                    "last_seen": e.last,
                    "sources": sorted(e.srcs),
                    "tiers": _roll_up(e.minutes, sum),
                }
                for pid, e in self._errors.items()
            }
        delta.update(self._maps)
        return delta

    def _build_metrics(self) -> dict[str, Any]:
        per_series: dict[str, dict[int, sketch.Agg]] = {}
        for (series, minute), acc in self._metrics.items():
            per_series.setdefault(series, {})[minute] = acc.freeze()
        return {
            series: {"unit": self._units.get(series),
                     "tiers": _roll_up(minutes, sketch.merge_all)}
            for series, minutes in per_series.items()
        }


def _roll_up(minutes: dict[int, Any], merge_many) -> dict[str, dict[int, Any]]:
    """Minute buckets -> every tier, merging minutes that fall into one coarser bucket.

    ``merge_many`` merges a bucket's minutes (in order) at once: ``sum`` for counts,
    ``sketch.merge_all`` for sketches (a pairwise fold cost O(minutes x bins) per merge).
    """
    tiers: dict[str, dict[int, Any]] = {TIERS[0][0]: dict(minutes)}
    for name, width in TIERS[1:]:
        groups: dict[int, list[Any]] = {}
        for start, value in minutes.items():
            b = start - start % width
            group = groups.get(b)
            if group is None:
                groups[b] = [value]
            else:
                group.append(value)
        tiers[name] = {b: merge_many(values) for b, values in groups.items()}
    return tiers


def _triage(builder: DeltaBuilder, iid: str, action: str, by: object, ts: float,
            until: object, stamp: list) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown insight action {action!r}")
    if not isinstance(by, str):
        raise ValueError("'by' is not a string")
    entry: dict[str, Any] = {"action": action, "at": ts, "by": by, "stamp": stamp}
    change: dict[str, Any] = {"history": [entry]}
    if action in ("mute", "unmute"):
        if action == "unmute":
            until = ts
        if not isinstance(until, int | float) or isinstance(until, bool) \
                or not 0 < until < payloads.MAX_TIMESTAMP:
            raise ValueError("mute 'until' is not a timestamp")
        entry["until"] = until
        change["mute"] = {"until": until, "at": ts, "by": by, "stamp": stamp}
    else:
        change["status"] = {"s": ACTIONS[action], "at": ts, "by": by, "stamp": stamp}
    builder.put("insights", iid, change)


# Each kind's typed payload schema (``state.payloads``): a row that does not match is quarantined.
_SCHEMA: dict[str, type[BaseModel]] = {
    KIND_METRIC: payloads.MetricPayload, KIND_ERROR: payloads.ErrorPayload,
    KIND_INSIGHT: payloads.InsightPayload, KIND_ACK: payloads.AckPayload,
    KIND_HEARTBEAT: payloads.HeartbeatPayload, KIND_REGISTER: payloads.RegisterPayload,
    KIND_AGENT_DATA: payloads.AgentDataPayload, KIND_SYSTEM: payloads.UpdatesPayload,
    KIND_CONFIG: payloads.UpdatesPayload, KIND_TRIAGE: payloads.TriagePayload,
    KIND_TRIAGE_KEY: payloads.TriageKeyPayload}


def check_payload(kind: str, p: dict[str, Any]) -> None:
    """Raise ValueError naming the field if ``p`` does not match ``kind``'s schema."""
    try:
        if kind == KIND_OPTIMIZATION:
            payloads.check_optimization(p)
        elif kind in _SCHEMA:
            _SCHEMA[kind].model_validate(p)
        else:
            raise ValueError(f"unknown event kind {kind!r}")
    except ValidationError as exc:
        raise ValueError(payloads.reason(exc)) from None


def _apply(builder: DeltaBuilder, row: InboxRow, p: dict[str, Any]) -> None:
    kind = row.kind
    check_payload(kind, p)
    ts = p["t"]
    stamp = [ts, row.stream, row.seq]
    if kind == KIND_METRIC:
        builder.metric(p["s"], float(p["v"]), ts, p.get("u"))
    elif kind == KIND_ERROR:
        builder.error(p["id"], p["type"], p["norm"], p["msg"], p["a"], p["t"], stamp,
                      p.get("fp", 1))  # rows written before fingerprint versions are version 1
    elif kind == KIND_INSIGHT:
        body = {"insight_type": p["type"], "source_agent": p["a"], "priority": p["p"],
                "content": p["c"], "stamp": stamp}
        builder.put("insights", p["id"], {"body": body, "occurrences": 1,
                                          "first_seen": p["t"], "last_seen": p["t"]})
    elif kind == KIND_ACK:  # written before the lifecycle existed: an acknowledgement
        _triage(builder, p["id"], "acknowledge", p.get("by", "api"), ts, None, stamp)
    elif kind == KIND_TRIAGE:
        _triage(builder, p["id"], p["action"], p["by"], ts, p.get("until"), stamp)
    elif kind == KIND_TRIAGE_KEY:
        if not isinstance(p["v"], dict):
            raise ValueError("triage value is not an object")
        builder.put("triage", p["k"], {"value": p["v"], "stamp": stamp})
    elif kind == KIND_OPTIMIZATION:
        builder.put("optimizations", p["record_id"], {**p, "stamp": stamp})
    elif kind == KIND_HEARTBEAT:
        hb = {"at": p["t"], "status": p["status"], "data": p["d"], "stamp": stamp}
        builder.put("agents", p["a"], {"hb": hb, "heartbeats": 1})
    elif kind == KIND_REGISTER:
        reg = {k: p[k] for k in ("kind", "interval_s", "schedule", "meta")}
        builder.put("agents", p["a"], {"reg": {**reg, "at": p["t"], "stamp": stamp},
                                       "heartbeats": 0})
    elif kind == KIND_AGENT_DATA:
        builder.put("agent_data", p["a"], {"value": p["v"], "stamp": stamp})
    elif kind in (KIND_SYSTEM, KIND_CONFIG):
        channel = "system" if kind == KIND_SYSTEM else "config"
        if kind == KIND_CONFIG:  # a stored bad value would break every later read
            for key, value in p["u"].items():  # all checked before any is put
                effective({key: value})
        for key, value in p["u"].items():
            builder.put(channel, key, {"value": value, "stamp": stamp})


def fold_rows(rows: Iterable[InboxRow], builder: DeltaBuilder | None = None, *,
              build: bool = True) -> FoldResult:
    """Fold rows into a delta; a bad row is quarantined with its reason, never raised.

    ``build=False`` only accumulates into ``builder`` (the result's delta is left empty): for
    callers that feed one builder in chunks and build once at the end.
    """
    builder = builder or DeltaBuilder()
    marks: dict[int, int] = {}
    quarantined: list[Quarantined] = []
    folded = 0
    loads = orjson.loads
    for row in rows:
        if row.seq > marks.get(row.stream, 0):
            marks[row.stream] = row.seq
        try:
            payload = loads(row.payload)
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
            _apply(builder, row, payload)
            folded += 1
        except (ValueError, KeyError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            quarantined.append(Quarantined(row, reason[:500]))
    return FoldResult(builder.build() if build else {}, marks, folded, quarantined)


def apply_event(builder: DeltaBuilder, kind: str, payload: dict[str, Any], origin: int,
                seq: int) -> None:
    """Apply one already-validated event (from ``state.events``) without the inbox."""
    _apply(builder, InboxRow(origin, seq, kind, b""), payload)
