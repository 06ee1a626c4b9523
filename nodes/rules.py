"""Insight rules over the bounded metrics and error patterns.

Each rule is a pure function of the state, the clock and its thresholds, and returns findings
with the numbers that fired it (evidence). The coordinator turns findings into insights; a
finding that persists bumps the same insight's occurrences instead of adding rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from state import sketch
from state.config import LivenessConfig, RulesConfig
from state.schema import TIER_WIDTH

MINUTE = TIER_WIDTH["1m"]


@dataclass
class Finding:
    insight_type: str
    key: str
    priority: str
    content: dict[str, Any] = field(default_factory=dict)


def _minute_aggs(state: dict, series: str, start: float, end: float) -> sketch.Agg | None:
    data = (state.get("metrics") or {}).get(series)
    if not data:
        return None
    buckets = data["tiers"].get("1m", {})
    return sketch.merge_all([a for b, a in buckets.items() if start <= b < end])


def _windows(now: float, rules: RulesConfig) -> tuple[float, float, float]:
    """Bucket-aligned (baseline start, current start, end)."""
    end = now - now % MINUTE + MINUTE
    current = end - rules.window_s
    return current - rules.baseline_s, current, end


def _is_latency(series: str, unit: str | None) -> bool:
    name = series.rsplit("/", 1)[-1]
    return unit == "ms" or name.endswith(("_ms", "latency", "latency_s"))


def _is_throughput(series: str) -> bool:
    name = series.rsplit("/", 1)[-1]
    return "per_s" in name or "throughput" in name


def latency_regressions(state: dict, now: float, rules: RulesConfig) -> list[Finding]:
    base_start, cur_start, end = _windows(now, rules)
    out = []
    for series, data in sorted((state.get("metrics") or {}).items()):
        if not _is_latency(series, data.get("unit")):
            continue
        cur = _minute_aggs(state, series, cur_start, end)
        base = _minute_aggs(state, series, base_start, cur_start)
        if cur is None or base is None:
            continue
        if cur[sketch.COUNT] < rules.min_samples or base[sketch.COUNT] < rules.min_samples:
            continue
        p95_now, p95_base = sketch.quantile(cur, 0.95), sketch.quantile(base, 0.95)
        if p95_base and p95_now and p95_now >= rules.latency_ratio * p95_base:
            out.append(Finding("latency_regression", f"latency_regression:{series}", "high", {
                "series": series, "current_p95": round(p95_now, 3),
                "baseline_p95": round(p95_base, 3), "ratio": round(p95_now / p95_base, 3),
                "current_count": cur[sketch.COUNT], "baseline_count": base[sketch.COUNT],
                "window_s": rules.window_s,
                "summary": f"{series}: p95 {p95_now:.1f} vs {p95_base:.1f} before "
                           f"({p95_now / p95_base:.1f}x)"}))
    return out


def throughput_drops(state: dict, now: float, rules: RulesConfig) -> list[Finding]:
    base_start, cur_start, end = _windows(now, rules)
    out = []
    for series in sorted(state.get("metrics") or {}):
        if not _is_throughput(series):
            continue
        cur = _minute_aggs(state, series, cur_start, end)
        base = _minute_aggs(state, series, base_start, cur_start)
        if cur is None or base is None or base[sketch.COUNT] < rules.min_samples:
            continue
        now_mean, base_mean = sketch.mean(cur), sketch.mean(base)
        if base_mean and base_mean > 0 and now_mean is not None \
                and now_mean < rules.throughput_drop_ratio * base_mean:
            out.append(Finding("throughput_drop", f"throughput_drop:{series}", "medium", {
                "series": series, "current_mean": round(now_mean, 3),
                "baseline_mean": round(base_mean, 3), "ratio": round(now_mean / base_mean, 3),
                "summary": f"{series}: {now_mean:.1f} now vs {base_mean:.1f} before"}))
    return out


def _error_counts(state: dict, start: float, end: float) -> dict[str, int]:
    per_agent: dict[str, int] = {}
    for p in (state.get("error_patterns") or {}).values():
        n = sum(c for b, c in p["tiers"].get("1m", {}).items() if start <= b < end)
        if n:
            for agent in p["sources"] or ["unknown"]:  # a shared pattern counts for each
                per_agent[agent] = per_agent.get(agent, 0) + n
    return per_agent


def error_spikes(state: dict, now: float, rules: RulesConfig) -> list[Finding]:
    base_start, cur_start, end = _windows(now, rules)
    current = _error_counts(state, cur_start, end)
    baseline = _error_counts(state, base_start, cur_start)
    out = []
    for agent, n in sorted(current.items()):
        if n < rules.min_errors:
            continue
        cur_rate = n / rules.window_s
        base_rate = baseline.get(agent, 0) / rules.baseline_s
        if base_rate == 0 or cur_rate >= rules.error_spike_ratio * base_rate:
            out.append(Finding("error_rate_spike", f"error_rate_spike:{agent}", "high", {
                "agent": agent, "errors_in_window": n, "window_s": rules.window_s,
                "current_per_min": round(cur_rate * 60, 3),
                "baseline_per_min": round(base_rate * 60, 3),
                "summary": f"{agent}: {n} errors in {rules.window_s // 60} min "
                           f"({cur_rate * 60:.1f}/min vs {base_rate * 60:.2f}/min before)"}))
    return out


def error_pattern_findings(state: dict, now: float, since: float,
                           rules: RulesConfig) -> list[Finding]:
    """New patterns (first seen since the last tick) and recurring ones (per hour)."""
    out = []
    for pid, p in sorted((state.get("error_patterns") or {}).items()):
        sample = (p.get("sample") or {}).get("message", "")
        if p["first_seen"] >= since:
            out.append(Finding("new_error_pattern", f"new_error_pattern:{pid}", "medium", {
                "pattern_id": pid, "error_type": p["error_type"], "sample": sample,
                "sources": p["sources"], "summary": f"new {p['error_type']}: {p['normalized']}"}))
        hour = sum(c for b, c in p["tiers"].get("1m", {}).items() if b >= now - 3600)
        if hour >= rules.recurring_errors:
            out.append(Finding("recurring_error", f"recurring_error:{pid}", "medium", {
                "pattern_id": pid, "error_type": p["error_type"], "last_hour": hour,
                "sample": sample, "summary": f"{p['error_type']} x{hour} in the last hour: "
                                             f"{p['normalized']}"}))
    return out


def quiet_sources(state: dict, now: float, liveness: LivenessConfig) -> list[Finding]:
    """Series that used to report and have been silent for ``quiet_after_s``."""
    out = []
    for series, data in sorted((state.get("metrics") or {}).items()):
        minutes = data["tiers"].get("1m", {})
        if not minutes:
            continue
        last = max(minutes) + MINUTE
        if now - last >= liveness.quiet_after_s:
            out.append(Finding("source_quiet", f"source_quiet:{series}", "low", {
                "series": series, "silent_s": round(now - last),
                "summary": f"{series}: no events for {(now - last) / 60:.0f} min"}))
    return out


def evaluate(state: dict, now: float, since: float, rules: RulesConfig,
             liveness: LivenessConfig) -> list[Finding]:
    return (latency_regressions(state, now, rules) + error_spikes(state, now, rules)
            + error_pattern_findings(state, now, since, rules)
            + throughput_drops(state, now, rules) + quiet_sources(state, now, liveness))
