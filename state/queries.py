"""Named read functions over a plain state dict.

The SharedState API, the CLI and the dashboard all read through these, so a number means the
same thing everywhere. They are pure: state and ``now`` in, plain data out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from state import payloads, sketch
from state.config import SystemConfig, effective, unflatten
from state.models import PRIORITIES
from state.redact import redact_obj
from state.schema import CHANNELS, TIER_WIDTH, TIERS

EXPORT_FORMAT = "background-agents/state@1"

log = logging.getLogger("bga.state")
SKIPPED: Counter[str] = Counter()
"""Malformed state entries skipped by readers and nodes in this process, per channel."""
_LOGGED: set[tuple[str, str]] = set()
_BAD_ENTRY = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def skip(channel: str, key: object, exc: BaseException) -> None:
    """Count a malformed entry a reader or node skipped; log it once per entry."""
    SKIPPED[channel] += 1
    mark = (channel, str(key)[:200])
    if mark not in _LOGGED and len(_LOGGED) < 10_000:
        _LOGGED.add(mark)
        log.warning("skipped malformed %s entry %r: %s: %s", channel, mark[1],
                    type(exc).__name__, exc)


def each(channel: str, items: Iterable[tuple[Any, Any]],
         row: Callable[[Any, Any], Any]) -> list[Any]:
    """``row(key, entry)`` for every entry; one that raises on a malformed entry is skipped
    (counted, logged once), never a failed read or tick. None results are left out."""
    out = []
    for key, entry in items:
        try:
            value = row(key, entry)
        except _BAD_ENTRY as exc:
            skip(channel, key, exc)
            continue
        if value is not None:
            out.append(value)
    return out


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{what} is a {type(value).__name__}, not an object")
    return value


def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} is not a number")
    return value


def config_flat(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v["value"] for k, v in (state.get("config") or {}).items()}


def config_of(state: dict[str, Any]) -> SystemConfig:
    return effective(config_flat(state))


def config_values(state: dict[str, Any]) -> dict[str, Any]:
    return config_of(state).model_dump()


def tier_for_window(state: dict[str, Any], hours: float) -> str:
    """Finest tier whose retention covers the window."""
    retention = config_of(state).retention
    keep = {"1m": retention.minute_buckets, "1h": retention.hour_buckets,
            "1d": retention.day_buckets}
    for name, width in TIERS:
        if hours * 3600 <= keep[name] * width:
            return name
    return TIERS[-1][0]


def _window_start(now: float, hours: float, width: int) -> int:
    start = now - hours * 3600
    return int(start) - int(start) % width + (width if start % width else 0)


def _agent_row(agent_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    reg = _obj(rec.get("reg"), "registration")
    hb = _obj(rec.get("hb"), "heartbeat")
    live = _obj(rec.get("liveness"), "liveness")
    data = _obj(hb.get("data"), "heartbeat data")
    at = hb.get("at")
    interval = reg.get("interval_s")
    return {
        "agent_id": str(agent_id),
        "kind": str(reg.get("kind", "unknown")),
        "interval_s": None if interval is None else _num(interval, "interval_s"),
        "schedule": reg.get("schedule"),
        "registered_at": reg.get("at"),
        "meta": _obj(reg.get("meta"), "meta"),
        "last_heartbeat": None if at is None else _num(at, "heartbeat time"),
        "status": str(hb.get("status", "registered" if reg else "unknown")),
        "heartbeat": data,
        "runs_on": runs_on(data),
        "heartbeats": _num(rec.get("heartbeats", 0), "heartbeats"),
        "liveness": live.get("value"),
    }


def agent_list(state: dict[str, Any]) -> list[dict[str, Any]]:
    agents = state.get("agents") or {}
    return each("agents", sorted(agents.items(), key=lambda kv: str(kv[0])), _agent_row)


def runs_on(heartbeat: dict[str, Any]) -> str:
    """Where an agent's last step ran: ``worker host:pid``, ``coordinator`` (inside a tick),
    or ``api`` (a heartbeat from outside any step)."""
    if heartbeat.get("worker"):
        return f"worker {heartbeat['worker']}"
    return "coordinator" if "step_ms" in heartbeat else "api"


def processes(state: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Every process that runs part of the system, on every host: the coordinator of the
    last tick and each worker seen in an agent's last heartbeat, newest first."""
    out: dict[str, dict[str, Any]] = {}
    tick = state.get("tick") or {}
    coordinator = tick.get("coordinator") or {}
    if coordinator.get("pid") is not None:
        key = f"{coordinator.get('host')}:{coordinator['pid']}"
        out[key] = {"process": key, "host": coordinator.get("host"), "pid": coordinator["pid"],
                    "role": "coordinator (leader)", "agents": sorted(tick.get("due") or []),
                    "last_seen": tick.get("started_at"),
                    "coordinator_only": bool(coordinator.get("coordinator_only"))}
    for a in agent_list(state):
        hb = a["heartbeat"]
        if not hb.get("worker"):
            continue
        key = str(hb["worker"])
        row = out.setdefault(key, {"process": key, "host": hb.get("host"), "pid": hb.get("pid"),
                                   "role": "worker", "agents": [], "last_seen": None,
                                   "coordinator_only": False})
        if row["role"] != "worker":  # a coordinator's agents were due this tick, not claimed
            continue
        row["agents"].append(a["agent_id"])
        if a["last_heartbeat"] is not None:
            row["last_seen"] = max(row["last_seen"] or 0.0, a["last_heartbeat"])
    rows = sorted(out.values(), key=lambda r: -(r["last_seen"] or 0.0))
    for r in rows:
        r["age_s"] = None if r["last_seen"] is None else max(0.0, now - r["last_seen"])
    return rows


def active_agents(state: dict[str, Any], now: float, max_age_minutes: float = 5) -> list[dict]:
    oldest = now - max_age_minutes * 60
    return [a for a in agent_list(state)
            if a["last_heartbeat"] is not None and a["last_heartbeat"] >= oldest]


def _stats(agg: sketch.Agg | None, seconds: float) -> dict[str, Any]:
    if agg is None:
        return {"count": 0, "rate": 0.0, "mean": None, "min": None, "max": None,
                "p50": None, "p95": None, "p99": None}
    return {
        "count": agg[sketch.COUNT],
        "rate": agg[sketch.COUNT] / seconds,
        "mean": sketch.mean(agg),
        "min": agg[sketch.MIN],
        "max": agg[sketch.MAX],
        "p50": sketch.quantile(agg, 0.50),
        "p95": sketch.quantile(agg, 0.95),
        "p99": sketch.quantile(agg, 0.99),
    }


def window_agg(state: dict[str, Any], series: str, hours: float, now: float,
               tier: str | None = None) -> sketch.Agg | None:
    """One merged sketch of a series over the last ``hours``."""
    data = (state.get("metrics") or {}).get(series)
    if not data:
        return None
    tier = tier or tier_for_window(state, hours)
    start = _window_start(now, hours, TIER_WIDTH[tier])
    buckets = data["tiers"].get(tier, {})
    return sketch.merge_all([agg for b, agg in buckets.items() if start <= b <= now])


def performance_summary(state: dict[str, Any], hours: float, now: float) -> dict[str, Any]:
    """Per series and overall: count, rate (/s), mean, min, max, p50, p95, p99."""
    seconds = hours * 3600
    series_out: dict[str, Any] = {}
    aggs = []
    tier = tier_for_window(state, hours)

    def row(series: str, data: dict[str, Any]) -> None:
        agg = window_agg(state, series, hours, now, tier)
        if agg is None:
            return
        stats = _stats(agg, seconds)
        aggs.append(agg)
        source, _, name = series.partition("/")
        series_out[series] = {"source_agent": source, "name": name, "unit": data.get("unit"),
                              **stats}

    each("metrics", sorted((state.get("metrics") or {}).items(), key=lambda kv: str(kv[0])), row)
    return {"window_hours": hours, "tier": tier,
            "series": series_out, "overall": _stats(sketch.merge_all(aggs), seconds)}


def series_points(state: dict[str, Any], series: str, hours: float, now: float) -> list[dict]:
    """Time series of one metric: per bucket count, rate, p50, p95, p99 (for charts)."""
    data = (state.get("metrics") or {}).get(series)
    if not data:
        return []
    tier = tier_for_window(state, hours)
    width = TIER_WIDTH[tier]
    start = _window_start(now, hours, width)

    def point(b: int, agg: sketch.Agg) -> dict[str, Any] | None:
        if not start <= b <= now:
            return None
        return {"bucket": b, "count": agg[sketch.COUNT], "rate": agg[sketch.COUNT] / width,
                "mean": sketch.mean(agg), "p50": sketch.quantile(agg, 0.5),
                "p95": sketch.quantile(agg, 0.95), "p99": sketch.quantile(agg, 0.99)}

    return each("metrics", sorted(data["tiers"].get(tier, {}).items()), point)


def error_patterns(
    state: dict[str, Any], now: float, error_type: str | None = None, min_frequency: int = 1,
    time_window_hours: float = 24,
) -> list[dict[str, Any]]:
    """Patterns seen at least ``min_frequency`` times in the window, most frequent first."""
    tier = tier_for_window(state, time_window_hours)
    start = _window_start(now, time_window_hours, TIER_WIDTH[tier])

    def row(pid: str, p: dict[str, Any]) -> dict[str, Any] | None:
        if error_type is not None and p["error_type"] != error_type:
            return None
        freq = sum(_num(c, "count") for b, c in p["tiers"].get(tier, {}).items()
                   if start <= b <= now)
        if freq < min_frequency or freq == 0:
            return None
        sample = _obj(p.get("sample"), "sample")
        return {
            "pattern_id": pid, "error_type": p["error_type"],
            "normalized_message": p["normalized"], "sample_message": sample.get("message", ""),
            "count": p["count"], "frequency": freq, "first_seen": p["first_seen"],
            "last_seen": _num(p["last_seen"], "last_seen"), "source_agents": list(p["sources"]),
        }

    out = each("error_patterns", (state.get("error_patterns") or {}).items(), row)
    out.sort(key=lambda p: (-p["frequency"], -p["last_seen"], p["pattern_id"]))
    return out


def insight_list(
    state: dict[str, Any], priority: str | None = None, insight_type: str | None = None,
    acted_upon: bool | None = None, limit: int | None = None,
) -> list[dict[str, Any]]:
    """Insights, highest priority then newest first."""
    rank = {p: i for i, p in enumerate(PRIORITIES)}

    def row(iid: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        body = rec.get("body")
        if body is None:
            return None
        acted = rec.get("acted_upon_at") is not None
        if body["priority"] not in rank:
            raise ValueError(f"unknown priority {body['priority']!r}")
        if priority is not None and body["priority"] != priority:
            return None
        if insight_type is not None and body["insight_type"] != insight_type:
            return None
        if acted_upon is not None and acted != acted_upon:
            return None
        return {
            "insight_id": iid, "insight_type": body["insight_type"],
            "source_agent": body["source_agent"], "priority": body["priority"],
            "content": _obj(body["content"], "content"), "first_seen": rec["first_seen"],
            "last_seen": _num(rec["last_seen"], "last_seen"), "occurrences": rec["occurrences"],
            "acted_upon_at": rec.get("acted_upon_at"), "acted_upon": acted,
        }

    out = each("insights", (state.get("insights") or {}).items(), row)
    out.sort(key=lambda i: (-rank[i["priority"]], -i["last_seen"], i["insight_id"]))
    return out[:limit] if limit else out


def recent_optimizations(
    state: dict[str, Any], now: float, optimization_type: str | None = None, hours: float = 24,
    success_only: bool = False,
) -> list[dict[str, Any]]:
    oldest = now - hours * 3600

    def row(rid: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        ts = _num(rec["stamp"][0], "stamp")
        if ts < oldest:
            return None
        if optimization_type is not None and rec["optimization_type"] != optimization_type:
            return None
        if success_only and not rec["success"]:
            return None
        return {k: v for k, v in rec.items() if k != "stamp"} | {"timestamp": ts,
                                                                  "record_id": str(rid)}

    out = each("optimizations", (state.get("optimizations") or {}).items(), row)
    out.sort(key=lambda r: (-r["timestamp"], r["record_id"]))
    return out


def system_state(state: dict[str, Any], now: float, pending: int = 0) -> dict[str, Any]:
    """The system's values plus a summary of every other part of the state."""
    insights = insight_list(state)
    open_insights = [i for i in insights if not i["acted_upon"]]
    stats = dict(state.get("stats") or {})
    errors_1h = error_patterns(state, now, time_window_hours=1)
    return {
        "values": {k: v["value"] for k, v in sorted((state.get("system") or {}).items())},
        "agents": {"registered": len(state.get("agents") or {}),
                   "active": len(active_agents(state, now))},
        "metrics": {"series": len(state.get("metrics") or {})},
        "error_patterns": {"total": len(state.get("error_patterns") or {}),
                           "active_1h": len(errors_1h),
                           "events_1h": sum(p["frequency"] for p in errors_1h)},
        "insights": {"total": len(insights), "open": len(open_insights),
                     "open_by_priority": {p: sum(1 for i in open_insights if i["priority"] == p)
                                          for p in PRIORITIES}},
        "optimizations": {"total": len(state.get("optimizations") or {})},
        "inbox": {"pending": pending},
        "stats": stats,
        "config": config_values(state),
    }


# --- export / restore -------------------------------------------------------------------------

EXPORTED = tuple(c for c in CHANNELS if c != "inbox")


def _keys_to_str(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _keys_to_str(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keys_to_str(v) for v in obj]
    return obj


def _tiers_from_json(tiers: dict[str, dict[str, Any]]) -> dict[str, dict[int, Any]]:
    return {name: {int(b): v for b, v in buckets.items()} for name, buckets in tiers.items()}


def export_document(state: dict[str, Any]) -> dict[str, Any]:
    """JSON-serialisable snapshot: every channel but the inbox bookkeeping, secrets redacted."""
    channels = {c: _keys_to_str(state.get(c) or {}) for c in EXPORTED}
    return {"format": EXPORT_FORMAT, "channels": redact_obj(channels),
            "config": redact_obj(config_values(state))}


def state_from_document(doc: dict[str, Any]) -> dict[str, Any]:
    """Inverse of ``export_document``; raises ValueError on a document of another format."""
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ValueError(f"not a {EXPORT_FORMAT} document")
    channels = doc.get("channels")
    if not isinstance(channels, dict) or set(channels) - set(EXPORTED):
        raise ValueError("document channels are missing or unknown")
    out = {c: dict(channels.get(c) or {}) for c in EXPORTED}
    try:
        out["metrics"] = {s: {**d, "tiers": _tiers_from_json(d["tiers"])}
                          for s, d in out["metrics"].items()}
        out["error_patterns"] = {p: {**d, "tiers": _tiers_from_json(d["tiers"])}
                                 for p, d in out["error_patterns"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"channels.metrics/error_patterns: malformed tiers ({exc})") from None
    for channel, entries in out.items():  # the stored schemas: a reader could not skip these
        if channel != "tick":
            for key, entry in entries.items():
                payloads.check_entry(channel, key, entry)
    effective(unflatten({k: v["value"] for k, v in out["config"].items()}))  # validates
    return out
