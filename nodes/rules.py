"""The one insight-rule engine: every insight about metrics and error patterns is decided here.

Each rule is a pure function of its inputs, the clock and the thresholds in ``RulesConfig``
(the only place thresholds live), and returns findings with the numbers that fired it
(evidence). Two kinds of callers feed it:

- the coordinator's review, over the folded state (``evaluate``);
- an agent that knows more about its own series, such as the LangSmith bridge, which calls
  the same comparisons (``latency_finding``, ``error_rate_finding``, ``per_run_spike_finding``)
  with windows that include the runs of its current step and its own evidence (example runs,
  links). The coordinator leaves those series (and their error sources) to it (``skip_series``,
  ``skip_sources``), so one event fires one insight.

The system's own internal series (``rules.internal_series``, by default the bridge's mirror of
the system graph's own traces) are not judged unless ``rules.judge_internal``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from state import sketch
from state.config import LivenessConfig, RulesConfig
from state.queries import is_internal_series, span_agg
from state.schema import TIER_WIDTH

MINUTE = TIER_WIDTH["1m"]
Skip = Callable[[str], bool]


def _never(_: str) -> bool:
    return False


@dataclass
class Finding:
    insight_type: str
    key: str
    priority: str
    content: dict[str, Any] = field(default_factory=dict)
    once: bool = False
    """Fire once per key: not again while an insight with this key exists."""


def windows(now: float, rules: RulesConfig) -> tuple[int, int, int]:
    """Minute-aligned (baseline start, current start, end): the current window is the last
    ``window_s`` up to the end of the current minute, the baseline the ``baseline_s`` before."""
    end = int(now) - int(now) % MINUTE + MINUTE
    current = end - rules.window_s
    return current - rules.baseline_s, current, end


def judged(series: str, rules: RulesConfig) -> bool:
    """False for the system's own internal series, unless configured to judge them."""
    return rules.judge_internal or not is_internal_series(series, rules.internal_series)


def _is_latency(series: str, unit: str | None) -> bool:
    name = series.rsplit("/", 1)[-1]
    return unit == "ms" or name.endswith(("_ms", "latency", "latency_s"))


def _is_throughput(series: str) -> bool:
    name = series.rsplit("/", 1)[-1]
    return "per_s" in name or "throughput" in name


# -- comparisons (fed by the coordinator or by an agent with its own windows and evidence) ------


def latency_finding(series: str, cur: sketch.Agg | None, base: sketch.Agg | None,
                    rules: RulesConfig, *, label: str | None = None, unit: str = "",
                    evidence: dict[str, Any] | None = None) -> Finding | None:
    """p95 of the current window at least ``latency_ratio`` x the baseline's."""
    if cur is None or base is None or not judged(series, rules):
        return None
    if cur[sketch.COUNT] < rules.min_samples or base[sketch.COUNT] < rules.min_samples:
        return None
    p95_now, p95_base = sketch.quantile(cur, 0.95), sketch.quantile(base, 0.95)
    if not (p95_base and p95_now and p95_now >= rules.latency_ratio * p95_base):
        return None
    u = f" {unit}" if unit else ""
    return Finding("latency_regression", f"latency_regression:{series}", "high", {
        **(evidence or {}), "series": series, "current_p95": round(p95_now, 3),
        "baseline_p95": round(p95_base, 3), "ratio": round(p95_now / p95_base, 3),
        "current_count": cur[sketch.COUNT], "baseline_count": base[sketch.COUNT],
        "window_s": rules.window_s, "baseline_s": rules.baseline_s,
        "summary": f"{label or series}: p95 {p95_now:.1f}{u} vs {p95_base:.1f}{u} before "
                   f"({p95_now / p95_base:.1f}x)"})


def error_rate_finding(series: str, cur_errors: float, cur_n: int, base_errors: float,
                       base_n: int, rules: RulesConfig, *, label: str | None = None,
                       evidence: dict[str, Any] | None = None) -> Finding | None:
    """Share of failed runs (a 0/1 series) at least ``error_spike_ratio`` x the baseline's."""
    if not judged(series, rules) or cur_n < rules.min_samples or base_n < rules.min_samples \
            or cur_errors < rules.min_errors:
        return None
    rate_c, rate_b = cur_errors / cur_n, base_errors / base_n
    if not (rate_b == 0 or rate_c >= rules.error_spike_ratio * rate_b):
        return None
    return Finding("error_rate_spike", f"error_rate_spike:{series}", "high", {
        **(evidence or {}), "series": series, "current_error_rate": round(rate_c, 4),
        "baseline_error_rate": round(rate_b, 4), "current_errors": int(cur_errors),
        "current_runs": cur_n, "baseline_runs": base_n, "window_s": rules.window_s,
        "summary": f"{label or series}: {rate_c:.0%} of runs failed vs {rate_b:.0%} before"})


def per_run_spike_finding(kind: str, series: str, unit: str, cur_sum: float, cur_n: int,
                          base_sum: float, base_n: int, rules: RulesConfig, *,
                          label: str | None = None,
                          evidence: dict[str, Any] | None = None) -> Finding | None:
    """Mean per run (cost, tokens) at least ``cost_ratio`` x the baseline's."""
    if not judged(series, rules) or cur_n < rules.min_samples or base_n < rules.min_samples \
            or base_sum <= 0:
        return None
    mean_c, mean_b = cur_sum / cur_n, base_sum / base_n
    if mean_c < rules.cost_ratio * mean_b:
        return None
    return Finding(kind, f"{kind}:{series}", "medium", {
        **(evidence or {}), "series": series, "unit": unit,
        "current_mean_per_run": round(mean_c, 6), "baseline_mean_per_run": round(mean_b, 6),
        "ratio": round(mean_c / mean_b, 3), "current_runs": cur_n, "baseline_runs": base_n,
        "window_s": rules.window_s,
        "summary": f"{label or series}: {mean_c:.4g} {unit} per run vs {mean_b:.4g} before "
                   f"({mean_c / mean_b:.1f}x)"})


def feedback_drop_finding(series: str, cur_sum: float, cur_n: int, base_sum: float,
                          base_n: int, rules: RulesConfig, *, label: str | None = None,
                          evidence: dict[str, Any] | None = None) -> Finding | None:
    """Mean feedback score of the current window at most ``1 - feedback_drop`` x the
    baseline's (scores where higher is better), with ``min_feedback_samples`` in both."""
    n = rules.min_feedback_samples
    if not judged(series, rules) or cur_n < n or base_n < n:
        return None
    mean_c, mean_b = cur_sum / cur_n, base_sum / base_n
    if mean_b <= 0 or mean_c > (1 - rules.feedback_drop) * mean_b:
        return None
    return Finding("feedback_drop", f"feedback_drop:{series}", "high", {
        **(evidence or {}), "series": series, "current_mean": round(mean_c, 6),
        "baseline_mean": round(mean_b, 6), "drop": round(1 - mean_c / mean_b, 4),
        "current_count": cur_n, "baseline_count": base_n, "window_s": rules.window_s,
        "summary": f"{label or series}: mean score {mean_c:.3g} vs {mean_b:.3g} before "
                   f"(-{1 - mean_c / mean_b:.0%})"})


# -- rules over the state -------------------------------------------------------------------------


def latency_regressions(state: dict, now: float, rules: RulesConfig,
                        skip_series: Skip = _never) -> list[Finding]:
    base_start, cur_start, end = windows(now, rules)
    out = []
    for series, data in sorted((state.get("metrics") or {}).items()):
        if not _is_latency(series, data.get("unit")) or skip_series(series):
            continue
        found = latency_finding(series, span_agg(state, series, cur_start, end),
                                span_agg(state, series, base_start, cur_start), rules,
                                unit=data.get("unit") or "")
        if found is not None:
            out.append(found)
    return out


def throughput_drops(state: dict, now: float, rules: RulesConfig,
                     skip_series: Skip = _never) -> list[Finding]:
    base_start, cur_start, end = windows(now, rules)
    out = []
    for series in sorted(state.get("metrics") or {}):
        if not _is_throughput(series) or skip_series(series) or not judged(series, rules):
            continue
        cur = span_agg(state, series, cur_start, end)
        base = span_agg(state, series, base_start, cur_start)
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


def _judged_patterns(state: dict, rules: RulesConfig, skip_sources: Skip
                     ) -> list[tuple[str, dict[str, Any]]]:
    """Error patterns the generic error rules judge: not of a type its agent reports itself
    (``rules.self_reported_errors``), not only from sources judged elsewhere."""
    own = set(rules.self_reported_errors)
    return [(pid, p) for pid, p in sorted((state.get("error_patterns") or {}).items())
            if p["error_type"] not in own
            and not (p["sources"] and all(skip_sources(s) for s in p["sources"]))]


def _error_counts(patterns: list[tuple[str, dict[str, Any]]], start: float, end: float,
                  skip_sources: Skip) -> dict[str, int]:
    per_agent: dict[str, int] = {}
    for _, p in patterns:
        n = sum(c for b, c in p["tiers"].get("1m", {}).items() if start <= b < end)
        if n:
            for agent in p["sources"] or ["unknown"]:  # a shared pattern counts for each
                if not skip_sources(agent):
                    per_agent[agent] = per_agent.get(agent, 0) + n
    return per_agent


def error_spikes(state: dict, now: float, rules: RulesConfig,
                 skip_sources: Skip = _never) -> list[Finding]:
    base_start, cur_start, end = windows(now, rules)
    patterns = _judged_patterns(state, rules, skip_sources)
    current = _error_counts(patterns, cur_start, end, skip_sources)
    baseline = _error_counts(patterns, base_start, cur_start, skip_sources)
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


def error_pattern_findings(state: dict, now: float, since: float, rules: RulesConfig,
                           skip_sources: Skip = _never) -> list[Finding]:
    """New patterns (first seen since the last tick) and recurring ones (per hour)."""
    out = []
    for pid, p in _judged_patterns(state, rules, skip_sources):
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


def quiet_sources(state: dict, now: float, liveness: LivenessConfig,
                  expected: Collection[str] | None = None,
                  rules: RulesConfig | None = None) -> list[Finding]:
    """Sources expected to report whose every series has been silent for ``quiet_after_s``.

    A source is an agent (series ``<agent>/...``) or a configured project of an agent
    (``<agent>/<project>/...``), named in ``expected`` (the coordinator passes its registered,
    live agents and configured projects); sources nobody expects are not watched, and neither
    are the system's internal series. The key names the quiet spell (when it went quiet), and
    the finding fires once per spell."""
    rules = rules or RulesConfig()
    wanted = set(expected or ())
    last: dict[str, int] = {}
    for series, data in (state.get("metrics") or {}).items():
        minutes = data["tiers"].get("1m", {})
        if not minutes or not judged(series, rules):
            continue
        newest = max(minutes) + MINUTE
        for source in _sources_of(series, wanted):
            last[source] = max(last.get(source, 0), newest)
    out = []
    for source, at in sorted(last.items()):
        silent = now - at
        if silent >= liveness.quiet_after_s:
            out.append(Finding("source_quiet", f"source_quiet:{source}:{at}", "low", {
                "source": source, "silent_s": round(silent), "quiet_since": at,
                "summary": f"{source}: no events for {silent / 60:.0f} min"}, once=True))
    return out


def _sources_of(series: str, wanted: set[str]) -> list[str]:
    agent, _, rest = series.partition("/")
    project = f"{agent}/{rest.partition('/')[0]}" if "/" in rest else None
    return [s for s in (agent, project) if s is not None and s in wanted]


def evaluate(state: dict, now: float, since: float, rules: RulesConfig,
             liveness: LivenessConfig, *, expected_sources: Collection[str] | None = None,
             skip_series: Skip = _never, skip_sources: Skip = _never) -> list[Finding]:
    return (latency_regressions(state, now, rules, skip_series)
            + error_spikes(state, now, rules, skip_sources)
            + error_pattern_findings(state, now, since, rules, skip_sources)
            + throughput_drops(state, now, rules, skip_series)
            + quiet_sources(state, now, liveness, expected_sources, rules))
