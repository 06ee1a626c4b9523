"""Pure merge functions used as LangGraph reducers.

Every reducer is deterministic, associative and commutative, so parallel nodes (``Send``
fan-out), replays and out-of-order arrivals give the same state. Last-writer-wins parts are
also idempotent; additive parts (counts, sketches) are exactly-once by construction: each
event enters the state through one fold guarded by per-stream watermarks. Bounding (retention,
caps) is not done here but in ``state.compact``, which the fold applies with a real clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import orjson

from state import sketch

V = TypeVar("V")


def _canon(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


@overload
def lww(a: dict, b: dict | None) -> dict: ...
@overload
def lww(a: dict | None, b: dict) -> dict: ...
@overload
def lww(a: dict | None, b: dict | None) -> dict | None: ...


def lww(a: dict | None, b: dict | None) -> dict | None:
    """Last writer wins by ``stamp`` ([ts, origin, seq]); ties broken by content, symmetrically."""
    if a is None:
        return b
    if b is None:
        return a
    sa, sb = a.get("stamp"), b.get("stamp")
    if sa is None:
        return b if sb is not None else (a if _canon(a) >= _canon(b) else b)
    if sb is None:
        return a
    if sa != sb:
        return a if sa > sb else b
    return a if _canon(a) >= _canon(b) else b


def merge_maps(
    a: dict[Any, V] | None, b: dict[Any, V] | None, merge_value: Callable[[V, V], V]
) -> dict[Any, V]:
    """Union of two maps, merging the values both have."""
    if not a:
        return dict(b or {})
    if not b:
        return dict(a)
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_value(out[k], v) if k in out else v
    return out


def _min_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _max_opt(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _add_counts(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    return merge_maps(a, b, lambda x, y: x + y)


def _merge_tiers(a: dict[str, dict[int, Any]], b: dict[str, dict[int, Any]], merge_bucket):
    return merge_maps(a, b, lambda x, y: merge_maps(x, y, merge_bucket))


MAX_SOURCES = 20


# --- channel reducers -------------------------------------------------------------------------


def merge_lww_map(a: dict[str, dict] | None, b: dict[str, dict] | None) -> dict[str, dict]:
    """Config / system-state map: each key holds ``{"value", "stamp"}``; newest stamp wins."""
    return merge_maps(a, b, lww)


def merge_series(x: dict, y: dict) -> dict:
    """One metric series: sketches of the same bucket merge."""
    return {
        "unit": max(x.get("unit") or "", y.get("unit") or "") or None,
        "tiers": _merge_tiers(x["tiers"], y["tiers"], sketch.merge),
    }


def merge_metrics(a: dict | None, b: dict | None) -> dict:
    """Series -> ``{"unit", "tiers": {tier: {bucket_start: Agg}}}``; sketches merge per bucket."""
    return merge_maps(a, b, merge_series)


def merge_pattern(x: dict, y: dict) -> dict:
    """One error pattern: counts add, first/last seen are min/max, newest sample wins.

    ``fp`` is the fingerprint version (``state.fingerprint``): the lower one wins, so a
    pattern that still holds old-version counts is re-keyed; the normalized text is the
    newer version's."""
    fx, fy = x.get("fp", 1), y.get("fp", 1)
    return {
        "error_type": x["error_type"],
        "normalized": x["normalized"] if fx >= fy else y["normalized"],
        "fp": min(fx, fy),
        "sample": lww(x["sample"], y["sample"]),
        "count": x["count"] + y["count"],
        "first_seen": min(x["first_seen"], y["first_seen"]),
        "last_seen": max(x["last_seen"], y["last_seen"]),
        "sources": sorted(set(x["sources"]) | set(y["sources"]))[:MAX_SOURCES],
        "tiers": _merge_tiers(x["tiers"], y["tiers"], lambda p, q: p + q),
    }


def merge_error_patterns(a: dict | None, b: dict | None) -> dict:
    """Pattern id -> counts per time bucket, first/last seen, latest sample, source agents."""
    return merge_maps(a, b, merge_pattern)


MAX_HISTORY = 20


def merge_history(a: list[dict] | None, b: list[dict] | None) -> list[dict]:
    """Bounded history of stamped entries: the newest ``MAX_HISTORY`` of the union (a set, so
    re-applying an entry changes nothing; top-N of a union, so the merge order does not
    matter), oldest first."""
    entries = {_canon(e): e for e in (*(a or ()), *(b or ()))}
    ranked = sorted(entries.items(), key=lambda kv: (kv[1].get("stamp") or [], kv[0]))
    return [e for _, e in ranked[-MAX_HISTORY:]]


def insight_status(rec: dict) -> dict | None:
    """An insight's stamped lifecycle register; a record written before the lifecycle existed
    (``acted_upon_at`` only) reads as acknowledged then."""
    status = rec.get("status")
    if status is None and rec.get("acted_upon_at") is not None:
        at = rec["acted_upon_at"]
        status = {"s": "acknowledged", "at": at, "by": "unknown", "stamp": [at, 0, 0]}
    return status


def merge_insight(x: dict, y: dict) -> dict:
    """One insight: newest body wins, occurrences add up, first/last seen are min/max; the
    lifecycle status and the mute are last-writer-wins registers, the history a bounded set."""
    out = {
        "body": lww(x.get("body"), y.get("body")),
        "occurrences": x.get("occurrences", 0) + y.get("occurrences", 0),
        "first_seen": _min_opt(x.get("first_seen"), y.get("first_seen")),
        "last_seen": _max_opt(x.get("last_seen"), y.get("last_seen")),
    }
    status = lww(insight_status(x), insight_status(y))
    mute = lww(x.get("mute"), y.get("mute"))
    history = merge_history(x.get("history"), y.get("history"))
    if status is not None:
        out["status"] = status
    if mute is not None:
        out["mute"] = mute
    if history:
        out["history"] = history
    return out


def merge_insights(a: dict | None, b: dict | None) -> dict:
    """Insight id -> newest content; occurrences add up; lifecycle status and mute are LWW."""
    return merge_maps(a, b, merge_insight)


def merge_records(a: dict | None, b: dict | None) -> dict:
    """Id -> stamped record (optimization records): newest version of each id wins."""
    return merge_maps(a, b, lww)


def merge_agent(x: dict, y: dict) -> dict:
    """One agent: registration, heartbeat and liveness are LWW; heartbeat counts add up."""
    return {
        "reg": lww(x.get("reg"), y.get("reg")),
        "hb": lww(x.get("hb"), y.get("hb")),
        "liveness": lww(x.get("liveness"), y.get("liveness")),
        "heartbeats": x.get("heartbeats", 0) + y.get("heartbeats", 0),
    }


def merge_agents(a: dict | None, b: dict | None) -> dict:
    """Agent id -> registration (LWW), latest heartbeat (LWW), liveness (LWW), heartbeat count."""
    return merge_maps(a, b, merge_agent)


def merge_watermarks(a: dict[int, int] | None, b: dict[int, int] | None) -> dict[int, int]:
    """Stream id -> highest folded sequence number."""
    return merge_maps(a, b, max)


def merge_stats(a: dict[str, float] | None, b: dict[str, float] | None) -> dict[str, float]:
    """Counters add up; keys ending in ``_at`` are timestamps and keep the latest."""
    out = dict(a or {})
    for k, v in (b or {}).items():
        if k not in out:
            out[k] = v
        elif k.endswith("_at"):
            out[k] = max(out[k], v)
        else:
            out[k] = out[k] + v
    return out
