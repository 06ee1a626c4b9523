"""Bound the state: drop what retention no longer covers and cap keyed collections.

Reducers only merge; this is where a real clock and the configured limits apply. The fold and
the coordinator run it on every write of the state, so a checkpoint's size depends on the
configuration, never on how many events have been recorded. What it keeps unchanged it returns
as the same objects (never copies), so writing a checkpoint skips them.
"""

from __future__ import annotations

from typing import Any

from state.config import RetentionConfig
from state.fingerprint import rekey_patterns
from state.lifecycle import settle
from state.reducers import insight_status, merge_pattern
from state.schema import TIERS


def horizons(now: float, retention: RetentionConfig) -> dict[str, int]:
    """Oldest bucket start kept for each tier."""
    keep = {
        "1m": retention.minute_buckets,
        "1h": retention.hour_buckets,
        "1d": retention.day_buckets,
    }
    out = {}
    for name, width in TIERS:
        current = int(now) - int(now) % width
        out[name] = current - (keep[name] - 1) * width
    return out


def _trim_tiers(tiers: dict[str, dict[int, Any]], cut: dict[str, int]) -> dict[str, dict[int, Any]]:
    """The buckets retention still covers; ``tiers`` itself (the same object, as are its
    untouched tiers) when nothing is dropped, so a checkpoint need not look into it again
    (``state.backends.tree``)."""
    out: dict[str, dict[int, Any]] | None = None
    for name, buckets in tiers.items():
        if buckets and min(buckets) < cut[name]:
            if out is None:
                out = dict(tiers)
            out[name] = {b: v for b, v in buckets.items() if b >= cut[name]}
    return tiers if out is None else out


def _same(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``before`` itself if ``after`` holds the same objects under the same keys."""
    if len(before) == len(after) and all(before.get(k) is v for k, v in after.items()):
        return before
    return after


def _newest(items: dict[str, Any], limit: int, key) -> dict[str, Any]:
    if len(items) <= limit:
        return items
    ranked = sorted(items.items(), key=lambda kv: (key(kv[1]), kv[0]), reverse=True)
    return dict(ranked[:limit])


def _last_bucket(tiers: dict[str, dict[int, Any]]) -> int:
    return max((max(b) for b in tiers.values() if b), default=0)


def compact_metrics(metrics: dict, now: float, retention: RetentionConfig) -> dict:
    cut = horizons(now, retention)
    out = {}
    for series, data in metrics.items():
        tiers = _trim_tiers(data["tiers"], cut)
        if not any(tiers.values()):
            continue
        if tiers is data["tiers"] and len(data) == 2 and "unit" in data:
            out[series] = data  # unchanged: the same object
        else:
            out[series] = {"unit": data.get("unit"), "tiers": tiers}
    return _newest(_same(metrics, out), retention.max_series,
                   lambda s: _last_bucket(s["tiers"]))


def compact_error_patterns(patterns: dict, now: float, retention: RetentionConfig) -> dict:
    """Trim and cap error patterns, re-keying any stored under older fingerprint rules."""
    cut = horizons(now, retention)
    out = {}
    for pid, p in rekey_patterns(patterns, merge_pattern).items():
        tiers = _trim_tiers(p["tiers"], cut)
        if not any(tiers.values()):
            continue
        out[pid] = p if tiers is p["tiers"] else {**p, "tiers": tiers}  # unchanged: the same
    return _newest(_same(patterns, out), retention.max_error_patterns, lambda p: p["last_seen"])


def _changed_at(rec: dict) -> float:
    status = insight_status(rec) or {}
    return max(status.get("at") or 0, (rec.get("mute") or {}).get("at") or 0)


def compact_insights(insights: dict, now: float, retention: RetentionConfig) -> dict:
    """Record regressions (``lifecycle.settle``) and cap insights; a status change whose
    insight never arrived expires with retention."""
    oldest = horizons(now, retention)["1d"]
    kept = {i: v for i, v in settle(insights).items()
            if v.get("body") is not None or _changed_at(v) >= oldest}
    return _newest(kept, retention.max_insights, lambda v: v.get("last_seen") or 0)


def compact_optimizations(records: dict, retention: RetentionConfig) -> dict:
    return _newest(records, retention.max_optimizations, lambda r: r["stamp"][0])


def compact(state: dict[str, Any], now: float, retention: RetentionConfig) -> dict[str, Any]:
    """Bounded copies of the growing channels of ``state`` (only those present)."""
    out: dict[str, Any] = {}
    if "metrics" in state:
        out["metrics"] = compact_metrics(state["metrics"] or {}, now, retention)
    if "error_patterns" in state:
        patterns = state["error_patterns"] or {}
        out["error_patterns"] = compact_error_patterns(patterns, now, retention)
    if "insights" in state:
        out["insights"] = compact_insights(state["insights"] or {}, now, retention)
    if "optimizations" in state:
        out["optimizations"] = compact_optimizations(state["optimizations"] or {}, retention)
    return out
