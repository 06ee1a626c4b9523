"""Named read functions over a plain state dict.

The SharedState API, the CLI and the dashboard all read through these, so a number means the
same thing everywhere. They are pure: state and ``now`` in, plain data out.
"""

from __future__ import annotations

from typing import Any

from state import sketch
from state.config import SystemConfig, effective, unflatten
from state.models import PRIORITIES
from state.redact import redact_obj
from state.schema import CHANNELS, TIER_WIDTH, TIERS

EXPORT_FORMAT = "background-agents/state@1"


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


def agent_list(state: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for agent_id, rec in sorted((state.get("agents") or {}).items()):
        reg = rec.get("reg") or {}
        hb = rec.get("hb") or {}
        live = rec.get("liveness") or {}
        out.append({
            "agent_id": agent_id,
            "kind": reg.get("kind", "unknown"),
            "interval_s": reg.get("interval_s"),
            "schedule": reg.get("schedule"),
            "registered_at": reg.get("at"),
            "meta": reg.get("meta") or {},
            "last_heartbeat": hb.get("at"),
            "status": hb.get("status", "registered" if reg else "unknown"),
            "heartbeat": hb.get("data") or {},
            "runs_on": runs_on(hb.get("data") or {}),
            "heartbeats": rec.get("heartbeats", 0),
            "liveness": live.get("value"),
        })
    return out


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
    for series, data in sorted((state.get("metrics") or {}).items()):
        agg = window_agg(state, series, hours, now, tier)
        if agg is None:
            continue
        aggs.append(agg)
        source, _, name = series.partition("/")
        series_out[series] = {"source_agent": source, "name": name, "unit": data.get("unit"),
                              **_stats(agg, seconds)}
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
    out = []
    for b, agg in sorted(data["tiers"].get(tier, {}).items()):
        if start <= b <= now:
            out.append({"bucket": b, "count": agg[sketch.COUNT], "rate": agg[sketch.COUNT] / width,
                        "mean": sketch.mean(agg), "p50": sketch.quantile(agg, 0.5),
                        "p95": sketch.quantile(agg, 0.95), "p99": sketch.quantile(agg, 0.99)})
    return out


def error_patterns(
    state: dict[str, Any], now: float, error_type: str | None = None, min_frequency: int = 1,
    time_window_hours: float = 24,
) -> list[dict[str, Any]]:
    """Patterns seen at least ``min_frequency`` times in the window, most frequent first."""
    tier = tier_for_window(state, time_window_hours)
    start = _window_start(now, time_window_hours, TIER_WIDTH[tier])
    out = []
    for pid, p in (state.get("error_patterns") or {}).items():
        if error_type is not None and p["error_type"] != error_type:
            continue
        freq = sum(c for b, c in p["tiers"].get(tier, {}).items() if start <= b <= now)
        if freq < min_frequency or freq == 0:
            continue
        sample = p.get("sample") or {}
        out.append({
            "pattern_id": pid, "error_type": p["error_type"],
            "normalized_message": p["normalized"], "sample_message": sample.get("message", ""),
            "count": p["count"], "frequency": freq, "first_seen": p["first_seen"],
            "last_seen": p["last_seen"], "source_agents": list(p["sources"]),
        })
    out.sort(key=lambda p: (-p["frequency"], -p["last_seen"], p["pattern_id"]))
    return out


def insight_list(
    state: dict[str, Any], priority: str | None = None, insight_type: str | None = None,
    acted_upon: bool | None = None, limit: int | None = None,
) -> list[dict[str, Any]]:
    """Insights, highest priority then newest first."""
    out = []
    for iid, rec in (state.get("insights") or {}).items():
        body = rec.get("body")
        if body is None:
            continue
        acted = rec.get("acted_upon_at") is not None
        if priority is not None and body["priority"] != priority:
            continue
        if insight_type is not None and body["insight_type"] != insight_type:
            continue
        if acted_upon is not None and acted != acted_upon:
            continue
        out.append({
            "insight_id": iid, "insight_type": body["insight_type"],
            "source_agent": body["source_agent"], "priority": body["priority"],
            "content": body["content"], "first_seen": rec["first_seen"],
            "last_seen": rec["last_seen"], "occurrences": rec["occurrences"],
            "acted_upon_at": rec.get("acted_upon_at"), "acted_upon": acted,
        })
    rank = {p: i for i, p in enumerate(PRIORITIES)}
    out.sort(key=lambda i: (-rank[i["priority"]], -i["last_seen"], i["insight_id"]))
    return out[:limit] if limit else out


def recent_optimizations(
    state: dict[str, Any], now: float, optimization_type: str | None = None, hours: float = 24,
    success_only: bool = False,
) -> list[dict[str, Any]]:
    oldest = now - hours * 3600
    out = []
    for rec in (state.get("optimizations") or {}).values():
        ts = rec["stamp"][0]
        if ts < oldest:
            continue
        if optimization_type is not None and rec["optimization_type"] != optimization_type:
            continue
        if success_only and not rec["success"]:
            continue
        out.append({k: v for k, v in rec.items() if k != "stamp"} | {"timestamp": ts})
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


def _sketches_from_json(series: str, tiers: dict[str, dict[str, Any]]
                        ) -> dict[str, dict[int, Any]]:
    """A series' tiers with every sketch validated (and older formats migrated)."""
    out = _tiers_from_json(tiers)
    for name, buckets in out.items():
        for b, agg in buckets.items():
            try:
                buckets[b] = sketch.load(agg)
            except ValueError as exc:
                raise ValueError(f"metrics {series!r} tier {name} bucket {b}: {exc}") from None
    return out


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
    out["metrics"] = {s: {**d, "tiers": _sketches_from_json(s, d["tiers"])}
                      for s, d in out["metrics"].items()}
    out["error_patterns"] = {p: {**d, "tiers": _tiers_from_json(d["tiers"])}
                             for p, d in out["error_patterns"].items()}
    effective(unflatten({k: v["value"] for k, v in out["config"].items()}))  # validates
    return out
