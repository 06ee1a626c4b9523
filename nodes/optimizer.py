"""Self-verifying optimization cycles: change a knob, measure, keep it or roll it back.

A cycle proposes one change per tunable agent setting (e.g. ``batch_size``) from the measured
metric it drives, applies it through the shared config and records it as ``applied``. After
the verification window the optimize node compares the metric before and after: a change that
helped by at least ``min_improvement`` is ``kept``; anything else is ``rolled_back`` (the old
value restored). Every step is an OptimizationRecord, so the history explains itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from nodes.base import Emitter
from state import events, sketch
from state.config import SystemConfig
from state.models import TUNABLE_PARAMS, OptimizationRecord, check_tuning
from state.queries import config_of, each, span_agg
from state.schema import TIER_WIDTH, SystemState

SOURCE = "optimizer"


@dataclass(frozen=True)
class Tunable:
    param: str
    metric: str
    higher_is_better: bool
    factor: float
    lo: float
    hi: float

    def propose(self, value: float, upward: bool) -> int:
        new = value * self.factor if upward else value / self.factor
        return int(min(self.hi, max(self.lo, round(new))))


TUNABLES = (
    Tunable("batch_size", "rows_per_s", True, 2.0, 1, 1_000_000),
    Tunable("page_size", "runs_per_s", True, 2.0, 1, 100),
)


def window_mean(state: dict, series: str, start: float, end: float) -> tuple[float | None, int]:
    """Mean and count of the minute buckets overlapping ``[start, end)``."""
    width = TIER_WIDTH["1m"]
    agg = span_agg(state, series, int(start) - int(start) % width, end)
    return (sketch.mean(agg), agg[sketch.COUNT]) if agg else (None, 0)


def totals_since(state: dict, series: str, minute: int) -> tuple[int, float]:
    """Count and sum of a series in minute buckets from ``minute`` on (for exact deltas)."""
    agg = span_agg(state, series, minute, float("inf"))
    return (agg[sketch.COUNT], agg[sketch.SUM]) if agg else (0, 0.0)


def mean_since_change(state: dict, series: str, details: dict) -> tuple[float | None, int]:
    """Mean of the samples recorded after a change: bucket totals now minus at apply time."""
    mark = details["mark"]
    count, total = totals_since(state, series, mark["minute"])
    n = count - mark["count"]
    return ((total - mark["sum"]) / n if n > 0 else None), max(n, 0)


def _system_value(state: dict, key: str, default: Any = None) -> Any:
    return ((state.get("system") or {}).get(key) or {}).get("value", default)


def _improvement(t: Tunable, before: float, after: float) -> float:
    if before == 0:
        return 0.0
    change = (after - before) / abs(before)
    return change if t.higher_is_better else -change


BY_PARAM = {t.param: t for t in TUNABLES}
assert set(BY_PARAM) == set(TUNABLE_PARAMS), "state.models.TUNABLE_PARAMS names the tunables"


def verify(state: dict, config: SystemConfig, now: float, out: Emitter) -> int:
    """Judge applied changes whose verification window has passed; returns how many.

    A record the optimizer cannot judge (an old or hand-written one that slipped past the
    typed schema) is skipped, counted and logged by ``queries.each``: never a failed tick."""
    opt = config.optimizer

    def judge(record_id: str, rec: dict) -> bool | None:
        details = rec.get("details") or {}
        if rec.get("outcome") != "applied" or not isinstance(details, dict) \
                or check_tuning(rec["optimization_type"], rec["before"], details) is None:
            return None
        if now < details["verify_after"]:
            return None
        t = BY_PARAM[details["param"]]
        series = f"{rec['target']}/{t.metric}"
        after, n = mean_since_change(state, series, details)
        if n < opt.min_samples and now < details["applied_at"] + 3 * opt.verify_s:
            return None  # not enough evidence yet; wait up to three windows
        return _judge(rec, details, t, after, n, opt, now, out)

    return len(each("optimizations", (state.get("optimizations") or {}).items(), judge))


def _judge(rec: dict, details: dict, t: Tunable, after: float | None, n: int, opt: Any,
           now: float, out: Emitter) -> bool:
    gain = _improvement(t, details["baseline"], after) if after is not None else None
    keep = gain is not None and n >= opt.min_samples and gain >= opt.min_improvement
    verdict = events.optimization(OptimizationRecord(  # built first: all emitted or none
        record_id=rec["record_id"], optimization_type=rec["optimization_type"],
        target=rec["target"], before=rec["before"],
        after={**rec["after"], t.metric: after, "samples": n},
        outcome="kept" if keep else "rolled_back", success=keep, source_agent=SOURCE,
        details={**details, "gain": gain, "judged_at": now,
                 "reason": "improved" if keep else
                 ("too few samples" if n < opt.min_samples else "no improvement")}),
        now=now)
    if not keep:
        out.emit(events.config_update(
            {f"agents.{rec['target']}.{t.param}": rec["before"][t.param]}, now=now))
    out.emit(verdict)
    return True


def propose(state: dict, config: SystemConfig, now: float, out: Emitter) -> int:
    """Start one change per tunable setting that has no change under verification."""
    opt = config.optimizer
    records = each("optimizations", (state.get("optimizations") or {}).items(), _tuning)
    busy = {(r["target"], r["details"]["param"]) for r in records if r["outcome"] == "applied"}
    started = 0
    for agent_id, section in sorted(config.agents.items()):
        if not section.enabled:
            continue
        for t in TUNABLES:
            value = getattr(section, t.param)
            if value is None or (agent_id, t.param) in busy:
                continue
            baseline, n = window_mean(state, f"{agent_id}/{t.metric}", now - opt.verify_s, now)
            if baseline is None or n < opt.min_samples:
                continue
            last = max((r for r in records if r["target"] == agent_id
                        and r["details"]["param"] == t.param),
                       key=lambda r: r["stamp"][0], default=None)
            upward = True
            if last is not None and last["outcome"] == "rolled_back":
                upward = not last["details"].get("upward", True)
            new = t.propose(value, upward)
            if new == value:  # at a bound: try the other way
                upward = not upward
                new = t.propose(value, upward)
            if new == value:
                continue
            minute = int(now) - int(now) % TIER_WIDTH["1m"]
            count, total = totals_since(state, f"{agent_id}/{t.metric}", minute)
            out.emit(events.config_update({f"agents.{agent_id}.{t.param}": new}, now=now))
            out.emit(events.optimization(OptimizationRecord(
                record_id=f"opt_{agent_id}_{t.param}_{int(now * 1000)}",
                optimization_type=f"tune_{t.param}", target=agent_id,
                before={t.param: value, t.metric: baseline}, after={t.param: new},
                outcome="applied", success=True, source_agent=SOURCE,
                details={"param": t.param, "metric": t.metric, "baseline": baseline,
                         "baseline_samples": n, "applied_at": now, "upward": upward,
                         "verify_after": now + opt.verify_s,
                         "mark": {"minute": minute, "count": count, "sum": total}}), now=now))
            started += 1
    return started


def _tuning(record_id: str, rec: dict) -> dict | None:
    """A tuning record as ``propose`` reads it, or None for history-only records."""
    if check_tuning(rec["optimization_type"], rec["before"], rec.get("details") or {}) is None:
        return None
    if not isinstance(rec["target"], str) or not isinstance(rec["stamp"][0], int | float):
        raise TypeError("target or stamp of the wrong type")
    return rec


async def optimize(state: SystemState) -> dict[str, Any]:
    """Verify pending changes; start a cycle when due or requested (the manual cycle)."""
    st: dict[str, Any] = dict(state)
    now = time.time()
    config = config_of(st)
    out = Emitter(now)
    verify(st, config, now, out)
    requested = bool(_system_value(st, "optimization_requested", False))
    last = _system_value(st, "last_optimization_cycle_at", 0) or 0
    if config.optimizer.enabled and (requested or now - last >= config.optimizer.interval_s):
        started = propose(st, config, now, out)
        out.emit(events.system_update({"optimization_requested": False,
                                       "last_optimization_cycle_at": now,
                                       "last_optimization_cycle": {"at": now,
                                                                   "changes": started,
                                                                   "manual": requested}},
                                      now=now))
    return out.update()
