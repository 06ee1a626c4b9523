"""Named read functions over a plain state dict.

The SharedState API, the CLI and the dashboard all read through these, so a number means the
same thing everywhere. They are pure: state and ``now`` in, plain data out.

What they derive at a cost is remembered by value, per process (``_Memo``): a window's merged
sketch and bin counts by series, tier and window start, used only while the window's buckets
are equal to those it was merged from (a late event in an old bucket, a new bucket or a new
checkpoint's decoded copy is compared, not trusted; the buckets that differ are taken out of
the counts or added, also when the window moved on with the clock), the effective config by the
config channel, quantiles by the sketch they were read from, a summary's row of a series by the
window sketch it was made from, a merge across series per block of series. So a repeated read
costs a walk over the window's buckets, and a read after a new event costs one bucket's merge
and one block's, with the same numbers as a merge of every bucket. Results are shared: never
mutate them.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from croniter import croniter

from state import lifecycle, payloads, sketch
from state.config import AgentSection, SystemConfig, effective, unflatten
from state.models import ACTIONABLE, PRIORITIES
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


class _Memo:
    """A bounded, thread-safe map (the least recently used entry goes first): what the read
    functions remember between calls. Each entry carries what it was derived from; the caller
    checks that before using it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.entries: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
            return entry

    def put(self, key: Any, entry: Any) -> None:
        with self.lock:
            self.entries[key] = entry
            self.entries.move_to_end(key)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def pop(self, key: Any) -> Any:
        with self.lock:
            return self.entries.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


WINDOW_MEMO = 16_384  # windows remembered: ~ series x windows read (summaries, rules, optimizer)
_WINDOWS = _Memo(WINDOW_MEMO)
_QUANTILES = _Memo(WINDOW_MEMO)
_LAST = _Memo(WINDOW_MEMO)
_ROWS = _Memo(WINDOW_MEMO)
_BLOCKS = _Memo(1_024)  # merges across series (``_merged_blocks``) and their blocks' bins
_CONFIGS = _Memo(8)
MEMOS = (_WINDOWS, _QUANTILES, _LAST, _ROWS, _BLOCKS, _CONFIGS)


def forget() -> None:
    """Drop everything the read functions remember (a benchmark's "no cache" case, tests)."""
    for memo in MEMOS:
        memo.clear()


def config_of(state: dict[str, Any]) -> SystemConfig:
    """The effective config (defaults under the stored values), validated once per config
    channel value: shared between callers, never mutate it."""
    channel = state.get("config") or {}
    with _CONFIGS.lock:
        known = list(_CONFIGS.entries.values())
    for stored, config in reversed(known):
        if stored is channel or stored == channel:
            return config
    config = effective(config_flat(state))
    _CONFIGS.put(id(channel), (channel, config))
    return config


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


# --- liveness: the one verdict the coordinator, `bga status` and the dashboard show -----------

DEFAULT_INTERVAL_S = 60.0
VERDICTS = ("active", "stale", "dead", "unknown")
MAX_OBSERVED_TICK_GAP_S = 3_600.0


def expected_interval(section: AgentSection | None, registered_interval: float | None,
                      now: float, registered_schedule: str | None = None) -> float:
    """Seconds between two runs of an agent: configured cron period, configured interval,
    registered schedule, registered interval, else ``DEFAULT_INTERVAL_S``."""
    cron = (section.cron if section is not None else None) or registered_schedule
    if cron and croniter.is_valid(cron):
        it = croniter(cron, now)
        first = it.get_next(float)
        return float(it.get_next(float) - first)
    if section is not None and section.interval_s:
        return float(section.interval_s)
    return float(registered_interval or DEFAULT_INTERVAL_S)


def agent_liveness(agent_id: str, rec: dict[str, Any], config: SystemConfig,
                   now: float) -> dict[str, Any]:
    """One agent judged at ``now`` from the age of its last heartbeat (or registration):
    ``stale`` after ``liveness.stale_factor`` expected intervals, ``dead`` after
    ``dead_factor``, ``unknown`` if it never reported."""
    reg, hb = rec.get("reg") or {}, rec.get("hb") or {}
    interval = expected_interval(config.agents.get(agent_id), reg.get("interval_s"), now,
                                 reg.get("schedule"))
    last = hb.get("at") or reg.get("at")
    if last is None:
        return {"verdict": "unknown", "age_s": None, "expected_interval_s": interval,
                "last_at": None}
    age = max(0.0, now - last)
    lv = config.liveness
    verdict = "dead" if age > lv.dead_factor * interval else \
        "stale" if age > lv.stale_factor * interval else "active"
    return {"verdict": verdict, "age_s": age, "expected_interval_s": interval, "last_at": last}


def scheduler_liveness(state: dict[str, Any], config: SystemConfig, now: float
                       ) -> dict[str, Any]:
    """Is anything ticking the system graph? ``down`` when no tick has ended for
    ``liveness.scheduler_down_factor`` tick intervals (at least ``scheduler_down_min_s``); the
    interval is the configured ``ticker.interval_s`` or the last observed gap between two
    ticks if longer (``bga run --interval``, a cron under ``langgraph dev``)."""
    last = (state.get("stats") or {}).get("last_tick_at")
    tick = state.get("tick") or {}
    expected = config.ticker.interval_s
    started, previous = tick.get("started_at"), tick.get("previous_started_at")
    if started is not None and previous is not None:
        expected = max(expected, min(started - previous, MAX_OBSERVED_TICK_GAP_S))
    lv = config.liveness
    down_after = max(lv.scheduler_down_factor * expected, lv.scheduler_down_min_s)
    coordinator = tick.get("coordinator") or {}
    out: dict[str, Any] = {"verdict": "never", "last_tick_at": last, "age_s": None,
           "expected_interval_s": expected, "down_after_s": down_after,
           "coordinator": (f"{coordinator.get('host')}:{coordinator['pid']}"
                           if coordinator.get("pid") is not None else None)}
    if last is not None:
        out["age_s"] = max(0.0, now - last)
        out["verdict"] = "down" if out["age_s"] > down_after else "running"
    return out


def liveness(state: dict[str, Any], now: float, config: SystemConfig | None = None
             ) -> dict[str, Any]:
    """The scheduler's and every agent's verdict at ``now``, and counts per verdict."""
    config = config or config_of(state)
    agents = dict(each("agents", sorted((state.get("agents") or {}).items(),
                                        key=lambda kv: str(kv[0])),
                       lambda a, rec: (a, agent_liveness(a, rec, config, now))))
    counts = dict.fromkeys(VERDICTS, 0)
    for v in agents.values():
        counts[v["verdict"]] += 1
    return {"scheduler": scheduler_liveness(state, config, now), "agents": agents,
            "counts": counts}


def _agent_row(agent_id: str, rec: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    reg = _obj(rec.get("reg"), "registration")
    hb = _obj(rec.get("hb"), "heartbeat")
    live = _obj(rec.get("liveness"), "liveness")
    data = _obj(hb.get("data"), "heartbeat data")
    at = hb.get("at")
    interval = reg.get("interval_s")
    reported = str(hb.get("status", "registered" if reg else "unknown"))
    return {
        "agent_id": str(agent_id),
        "kind": str(reg.get("kind", "unknown")),
        "interval_s": None if interval is None else _num(interval, "interval_s"),
        "schedule": reg.get("schedule"),
        "registered_at": reg.get("at"),
        "meta": _obj(reg.get("meta"), "meta"),
        "last_heartbeat": None if at is None else _num(at, "heartbeat time"),
        "status": verdict["verdict"] if verdict.get("verdict") in ("stale", "dead")
        else reported,
        "reported_status": reported,
        "heartbeat": data,
        "runs_on": runs_on(data),
        "heartbeats": _num(rec.get("heartbeats", 0), "heartbeats"),
        "liveness": verdict.get("verdict", live.get("value")),
        "expected_interval_s": verdict.get("expected_interval_s"),
    }


def agent_list(state: dict[str, Any], now: float | None = None) -> list[dict[str, Any]]:
    """Agents with their registration and last heartbeat (a malformed entry is skipped). With
    ``now``, each is judged (``liveness``, ``expected_interval_s``; the age is in
    ``liveness()``) and ``status`` never contradicts it: a stale or dead agent's status is its
    verdict, whatever it last said (``reported_status``)."""
    agents = state.get("agents") or {}
    judged = liveness(state, now)["agents"] if now is not None else {}
    return each("agents", sorted(agents.items(), key=lambda kv: str(kv[0])),
                lambda a, rec: _agent_row(a, rec, judged.get(a) or {}))


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


def quantiles(agg: sketch.Agg) -> tuple[float | None, float | None, float | None]:
    """p50, p95 and p99 of a sketch, read once per sketch object (sketches in the state and
    the merged windows are never mutated)."""
    hit = _QUANTILES.get(id(agg))
    if hit is not None and hit[0] is agg:
        return hit[1]
    p50, p95, p99 = sketch.quantiles(agg, (0.50, 0.95, 0.99))
    qs = (p50, p95, p99)
    _QUANTILES.put(id(agg), (agg, qs))  # holding ``agg`` keeps its id from being reused
    return qs


def _stats(agg: sketch.Agg | None, seconds: float) -> dict[str, Any]:
    if agg is None:
        return {"count": 0, "sum": 0.0, "rate": 0.0, "mean": None, "min": None, "max": None,
                "p50": None, "p95": None, "p99": None}
    p50, p95, p99 = quantiles(agg)
    return {
        "count": agg[sketch.COUNT],
        "sum": agg[sketch.SUM],
        "rate": agg[sketch.COUNT] / seconds,
        "mean": sketch.mean(agg),
        "min": agg[sketch.MIN],
        "max": agg[sketch.MAX],
        "p50": p50,
        "p95": p95,
        "p99": p99,
    }


def is_internal_series(series: str, globs: Iterable[str]) -> bool:
    """One of the system's own series (``rules.internal_series``): its own graph's traces."""
    return any(fnmatchcase(series, g) for g in globs)


def span_agg(state: dict[str, Any], series: str, start: float, end: float,
             tier: str = "1m") -> sketch.Agg | None:
    """The one window aggregation: a series' buckets of ``tier`` that start in
    ``[start, end)``, merged into one sketch (None if there are none). Every window of the
    rules, the optimizer, the bridge and the read API is this."""
    data = (state.get("metrics") or {}).get(series)
    if not data:
        return None
    buckets = data["tiers"].get(tier, {})
    last: _Last | None = _LAST.get((series, tier, start))
    if last is not None and last.buckets is buckets and last.lo < end <= last.hi:
        return last.result  # the same bucket dict (never mutated), the same buckets in range
    items = [(b, agg) for b, agg in buckets.items() if start <= b < end]
    if len(items) <= 1:
        result = sketch.migrate(items[0][1]) if items else None
    else:
        result = _merged((series, tier, start), items)
    lo = max(items)[0] if items else start - 1  # ends in (lo, hi] take the same items
    hi = min(filter(partial(operator.le, end), buckets), default=math.inf)
    _LAST.put((series, tier, start), _Last(buckets, lo, hi, result))
    return result


class _Last:
    """The last window of a series read from one bucket dict: any end in ``(lo, hi]`` takes
    the same buckets from it."""

    __slots__ = ("buckets", "hi", "lo", "result")

    def __init__(self, buckets: dict[int, sketch.Agg], lo: float, hi: float,
                 result: sketch.Agg | None) -> None:
        self.buckets, self.lo, self.hi, self.result = buckets, lo, hi, result


class _Window:
    """A merged window: the (bucket, sketch) pairs it was merged from, in order, their bin
    counts, and the result."""

    __slots__ = ("counts", "items", "result")

    def __init__(self, items: list[tuple[int, sketch.Agg]], counts: sketch.BinCounts,
                 result: sketch.Agg) -> None:
        self.items, self.counts, self.result = items, counts, result


SLIDE_BACK = 8  # earlier starts (in buckets) a window looks for to move on from


def _merged(key: tuple[Any, str, float], items: list[tuple[int, sketch.Agg]]) -> sketch.Agg:
    """``sketch.merge_all`` of the sketches of ``items`` (two or more), remembered by ``key``
    (series, tier, window start): the remembered result while every (bucket, sketch) pair
    is equal to the remembered one, in order; else the remembered bin counts of this window
    (a new or late event: a bucket's sketch changed), or of the series' window in the tier
    that started up to ``SLIDE_BACK`` buckets earlier (the clock moved on: that entry is
    taken over), with the sketches that went out taken out and those that came in added;
    every bucket merged again only when most changed. Count, sum, min, max and zeros are
    folded over ``items`` in order, so equal inputs in the same order give the same numbers
    as one merge of every bucket, bit for bit."""
    entry: _Window | None = _WINDOWS.get(key)
    if entry is not None and entry.items == items:
        if entry.items[-1][1] is not items[-1][1]:  # equal copies (a newly decoded checkpoint):
            _WINDOWS.put(key, _Window(items, entry.counts, entry.result))  # let the old go
        return entry.result
    if entry is None:
        series, tier, start = key
        width = TIER_WIDTH[tier]
        for k in range(1, SLIDE_BACK + 1):
            entry = _WINDOWS.pop((series, tier, start - k * width))
            if entry is not None:
                break
    counts = None
    if entry is not None:
        old = dict(entry.items)
        out: list[sketch.Agg] = []
        came: list[sketch.Agg] = []
        for b, agg in items:
            was = old.pop(b, None)
            if was is None:
                came.append(agg)
            elif was is not agg and was != agg:
                out.append(was)
                came.append(agg)
        out.extend(old.values())  # buckets no longer in the window
        if len(out) + len(came) < len(items):
            counts = entry.counts.copy()
            for agg in out:
                counts.take(agg)
            for agg in came:
                counts.add(agg)
    aggs = [agg for _, agg in items]
    if counts is None:
        counts = sketch.BinCounts(aggs)
    result = sketch.merge_with_bins(aggs, *counts.stores(aggs))
    _WINDOWS.put(key, _Window(items, counts, result))
    return result


BLOCK = 32  # aggregates per block of a merge across series (``_merged_blocks``)


def _merged_blocks(key: tuple[Any, ...], aggs: list[sketch.Agg]) -> sketch.Agg:
    """``sketch.merge_all(aggs)`` of two or more aggregates (each series' window, in series
    order), remembered by ``key``: the remembered result while ``aggs`` are equal to those it
    was merged from; else the bins are merged per block of ``BLOCK`` consecutive aggregates,
    each block's bins remembered by ``key`` and position and reused while its aggregates
    are equal, and the blocks' bins added up (bins add up exactly whatever the grouping).
    So after one series changed, one block is merged again, not every series."""
    entry = _BLOCKS.get(key)
    if entry is not None and entry[0] == aggs:
        return entry[1]
    parts = []
    for i in range(0, len(aggs), BLOCK):
        block = aggs[i:i + BLOCK]
        hit = _BLOCKS.get((*key, i))
        if hit is not None and hit[0] == block:
            parts.append(hit[1])
            continue
        bins = sketch.merge_bins(block)
        _BLOCKS.put((*key, i), (block, bins))
        parts.append(bins)
    result = sketch.merge_with_bins(aggs, *sketch.add_bins(parts))
    _BLOCKS.put(key, (aggs, result))
    return result


def window_agg(state: dict[str, Any], series: str, hours: float, now: float,
               tier: str | None = None) -> sketch.Agg | None:
    """One merged sketch of a series over the last ``hours`` (buckets started by ``now``)."""
    tier = tier or tier_for_window(state, hours)
    return span_agg(state, series, _window_start(now, hours, TIER_WIDTH[tier]), int(now) + 1,
                    tier)


def performance_summary(state: dict[str, Any], hours: float, now: float) -> dict[str, Any]:
    """Per series and overall: count, sum, rate (/s), mean, min, max, p50, p95, p99.

    A series' row is remembered with the window sketch and unit it was made from and is the
    same (shared) dict while the window is the same sketch object (a series no event
    reached since the last read: its buckets are the same objects in a new checkpoint); the
    overall sketch is ``_merged_blocks`` of the windows."""
    seconds = hours * 3600
    series_out: dict[str, Any] = {}
    aggs = []
    tier = tier_for_window(state, hours)

    def row(series: str, data: dict[str, Any]) -> None:
        agg = window_agg(state, series, hours, now, tier)
        if agg is None:
            return
        aggs.append(agg)
        unit = data.get("unit")
        hit = _ROWS.get((series, hours, tier))
        if hit is not None and hit[0] is agg and hit[1] == unit:
            series_out[series] = hit[2]
            return
        source, _, name = series.partition("/")
        out = {"source_agent": source, "name": name, "unit": unit, **_stats(agg, seconds)}
        _ROWS.put((series, hours, tier), (agg, unit, out))  # holding ``agg`` keeps its id
        series_out[series] = out

    each("metrics", sorted((state.get("metrics") or {}).items(), key=lambda kv: str(kv[0])), row)
    overall = None
    if len(aggs) == 1:
        overall = sketch.migrate(aggs[0])
    elif aggs:
        overall = _merged_blocks(
            ("overall", tier, _window_start(now, hours, TIER_WIDTH[tier])), aggs)
    return {"window_hours": hours, "tier": tier,
            "series": series_out, "overall": _stats(overall, seconds)}


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
    acted_upon: bool | None = None, limit: int | None = None, *,
    status: str | Iterable[str] | None = None, now: float | None = None,
) -> list[dict[str, Any]]:
    """Insights, highest priority then newest first, each with its lifecycle now
    (``state.lifecycle.view``). ``status`` keeps those whose shown state (open, regressed,
    acknowledged, resolved, muted) is one of the given; ``acted_upon`` those acknowledged or
    resolved (True) or not (False). A malformed entry is skipped."""
    now = time.time() if now is None else now
    wanted = None if status is None else {status} if isinstance(status, str) else set(status)
    mutes = lifecycle.type_mutes(state)
    rank = {p: i for i, p in enumerate(PRIORITIES)}

    def row(iid: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        body = rec.get("body")
        if body is None:
            return None
        if body["priority"] not in rank:
            raise ValueError(f"unknown priority {body['priority']!r}")
        if priority is not None and body["priority"] != priority:
            return None
        if insight_type is not None and body["insight_type"] != insight_type:
            return None
        life = lifecycle.view(rec, now, mutes)
        acted = life["status"] in ("acknowledged", "resolved")
        if acted_upon is not None and acted != acted_upon:
            return None
        if wanted is not None and life["state"] not in wanted:
            return None
        register = lifecycle.status_register(rec) or {}
        return {
            "insight_id": iid, "insight_type": body["insight_type"],
            "source_agent": body["source_agent"], "priority": body["priority"],
            "content": _obj(body["content"], "content"), "first_seen": rec["first_seen"],
            "last_seen": _num(rec["last_seen"], "last_seen"), "occurrences": rec["occurrences"],
            "acted_upon_at": register.get("at") if acted else None, "acted_upon": acted,
            **life,
            "history": [{k: v for k, v in e.items() if k != "stamp"}
                        for e in rec.get("history") or []],
        }

    out = each("insights", (state.get("insights") or {}).items(), row)
    out.sort(key=lambda i: (-rank[i["priority"]], -i["last_seen"], i["insight_id"]))
    return out[:limit] if limit else out


def insight_counts(insights: list[dict[str, Any]], seen: float | None = None) -> dict[str, Any]:
    """Counts over ``insight_list`` rows: total, open (active: open or regressed, not muted;
    ``info`` ones are counted apart as ``informational``), open by priority, by shown state,
    and ``new`` (active and entered that state after ``seen``; all active ones when never
    seen)."""
    active = [i for i in insights if i["active"] and i["priority"] in ACTIONABLE]
    return {
        "total": len(insights), "open": len(active),
        "open_by_priority": {p: sum(1 for i in active if i["priority"] == p)
                             for p in ACTIONABLE},
        # active "info" insights (an import completed): listed, never open work
        "informational": sum(1 for i in insights if i["active"] and i["priority"] == "info"),
        "by_status": {s: sum(1 for i in insights if i["state"] == s)
                      for s in lifecycle.STATES},
        "new": sum(1 for i in active if seen is None or (i["since"] or 0) > seen),
    }


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
    insights = insight_list(state, now=now)
    stats = dict(state.get("stats") or {})
    errors_1h = error_patterns(state, now, time_window_hours=1)
    live = liveness(state, now)
    return {
        "values": {k: v["value"] for k, v in sorted((state.get("system") or {}).items())},
        "agents": {"registered": len(state.get("agents") or {}), **live["counts"]},
        "scheduler": live["scheduler"],
        "metrics": {"series": len(state.get("metrics") or {})},
        "error_patterns": {"total": len(state.get("error_patterns") or {}),
                           "active_1h": len(errors_1h),
                           "events_1h": sum(p["frequency"] for p in errors_1h)},
        "insights": insight_counts(insights),
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
    try:
        out["metrics"] = {s: {**d, "tiers": _sketches_from_json(s, d["tiers"])}
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
