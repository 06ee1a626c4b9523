"""The coordinator's insight rules (``nodes.rules``) as pure functions of a folded state.

States are built with the fold's own ``DeltaBuilder`` from events with explicit timestamps, so
every window boundary is known exactly. With the default rules the current window is the last
10 minutes (bucket-aligned) and the baseline the hour before it.
"""

from __future__ import annotations

from typing import Any

import pytest

from nodes import rules
from nodes.base import Emitter
from nodes.coordinator import COORDINATOR
from state import events
from state.config import LivenessConfig, RulesConfig
from state.fold import DeltaBuilder
from state.schema import apply_update

NOW = 1_699_999_200.0 + 30  # 30 s into a minute (and an hour)
RULES = RulesConfig()
LIVENESS = LivenessConfig()
BASELINE_AT = NOW - 30 * 60  # inside the baseline window (an hour before the current one)
CURRENT_AT = NOW - 60  # inside the current window


def metrics_state(*batches: tuple[str, list[float], float], unit: str | None = None) -> dict:
    """State with ``(series, values, timestamp)`` batches folded in."""
    b = DeltaBuilder()
    for series, values, ts in batches:
        for i, v in enumerate(values):
            b.metric(series, v, ts + i * 0.001, unit)
    return b.build()


def errors_state(*batches: tuple[str, str, int, float], first_seen: float | None = None) -> dict:
    """State with ``(pattern id, agent, how many, timestamp)`` error batches folded in."""
    b = DeltaBuilder()
    seq = 0
    for pid, agent, n, ts in batches:
        for i in range(n):
            seq += 1
            b.error(pid, "ValueError", "bad row <num>", f"bad row {i}", agent, ts + i * 0.001,
                    [ts, 1, seq])
    if first_seen is not None:
        seq += 1
        b.error(batches[0][0], "ValueError", "bad row <num>", "bad row 0", batches[0][1],
                first_seen, [first_seen, 1, seq])
    return b.build()


def ramp(n: int, scale: float = 1.0) -> list[float]:
    return [scale * (i + 1) for i in range(n)]


# -- latency regression ----------------------------------------------------------------------------


def test_latency_regression_fires_with_evidence() -> None:
    state = metrics_state(("api/latency_ms", ramp(100), BASELINE_AT),
                          ("api/latency_ms", ramp(100, 2.0), CURRENT_AT))
    [finding] = rules.latency_regressions(state, NOW, RULES)
    assert finding.insight_type == "latency_regression"
    assert finding.key == "latency_regression:api/latency_ms"
    assert finding.priority == "high"
    c = finding.content
    assert c["series"] == "api/latency_ms"
    assert c["current_count"] == 100
    assert c["baseline_count"] == 100
    assert c["window_s"] == 600
    # true p95s are ~95 and ~190; the sketch is accurate to 2 %
    assert c["baseline_p95"] == pytest.approx(95, rel=0.03)
    assert c["current_p95"] == pytest.approx(190, rel=0.03)
    assert c["ratio"] == pytest.approx(c["current_p95"] / c["baseline_p95"], abs=1e-3)
    assert c["ratio"] == pytest.approx(2.0, rel=0.05)


def test_latency_regression_fires_exactly_at_the_ratio() -> None:
    # constant values: the sketch clamps to the exact min/max, so p95s are exact
    state = metrics_state(("api/latency_ms", [100.0] * 30, BASELINE_AT),
                          ("api/latency_ms", [150.0] * 30, CURRENT_AT))
    [finding] = rules.latency_regressions(state, NOW, RULES)
    assert (finding.content["current_p95"], finding.content["baseline_p95"]) == (150.0, 100.0)
    assert finding.content["ratio"] == 1.5


@pytest.mark.parametrize(("base", "cur", "base_n", "cur_n"), [
    (100.0, 149.0, 30, 30),   # below 1.5x
    (100.0, 90.0, 30, 30),    # faster
    (100.0, 300.0, 30, 19),   # too few current samples (min_samples = 20)
    (100.0, 300.0, 19, 30),   # too few baseline samples
], ids=["below-ratio", "faster", "few-current", "few-baseline"])
def test_latency_regression_quiet_cases(base: float, cur: float, base_n: int, cur_n: int) -> None:
    state = metrics_state(("api/latency_ms", [base] * base_n, BASELINE_AT),
                          ("api/latency_ms", [cur] * cur_n, CURRENT_AT))
    assert rules.latency_regressions(state, NOW, RULES) == []


def test_latency_regression_only_looks_at_latency_series_and_its_windows() -> None:
    # not a latency series (no _ms suffix, no ms unit)
    assert rules.latency_regressions(metrics_state(
        ("api/queue_depth", [100.0] * 30, BASELINE_AT),
        ("api/queue_depth", [300.0] * 30, CURRENT_AT)), NOW, RULES) == []
    # the unit makes it one
    state = metrics_state(("api/step", [100.0] * 30, BASELINE_AT),
                          ("api/step", [300.0] * 30, CURRENT_AT), unit="ms")
    assert [f.key for f in rules.latency_regressions(state, NOW, RULES)] == \
        ["latency_regression:api/step"]
    # slow samples older than the baseline window do not count as the baseline
    state = metrics_state(("api/latency_ms", [100.0] * 30, NOW - 3 * 3600),
                          ("api/latency_ms", [300.0] * 30, CURRENT_AT))
    assert rules.latency_regressions(state, NOW, RULES) == []


# -- error-rate spike ------------------------------------------------------------------------------


def test_error_spike_with_no_baseline() -> None:
    state = errors_state(("p1", "importer", 6, CURRENT_AT))
    [finding] = rules.error_spikes(state, NOW, RULES)
    assert finding.key == "error_rate_spike:importer"
    assert finding.priority == "high"
    assert finding.content["errors_in_window"] == 6
    assert finding.content["current_per_min"] == pytest.approx(0.6)
    assert finding.content["baseline_per_min"] == 0


def test_error_spike_against_a_baseline() -> None:
    # baseline: 60 errors in an hour = 1/min; current: 40 in 10 min = 4/min (>= 3x)
    state = errors_state(("p1", "importer", 60, BASELINE_AT),
                         ("p1", "importer", 40, CURRENT_AT))
    [finding] = rules.error_spikes(state, NOW, RULES)
    assert finding.content["errors_in_window"] == 40
    assert finding.content["current_per_min"] == pytest.approx(4.0)
    assert finding.content["baseline_per_min"] == pytest.approx(1.0)


@pytest.mark.parametrize(("base_n", "cur_n"), [(60, 20), (0, 4)],
                         ids=["2x-baseline", "below-min-errors"])
def test_error_spike_quiet_cases(base_n: int, cur_n: int) -> None:
    state = errors_state(("p1", "importer", base_n, BASELINE_AT),
                         ("p1", "importer", cur_n, CURRENT_AT))
    assert rules.error_spikes(state, NOW, RULES) == []


# -- error patterns --------------------------------------------------------------------------------


def test_new_error_pattern_since_last_tick() -> None:
    since = NOW - 5
    state = errors_state(("p_new", "importer", 1, NOW - 1))
    [finding] = [f for f in rules.error_pattern_findings(state, NOW, since, RULES)
                 if f.insight_type == "new_error_pattern"]
    assert finding.key == "new_error_pattern:p_new"
    assert finding.content["pattern_id"] == "p_new"
    assert finding.content["error_type"] == "ValueError"
    assert finding.content["sources"] == ["importer"]
    assert finding.content["sample"] == "bad row 0"
    # the same pattern, first seen before the last tick, is not new any more
    old = errors_state(("p_old", "importer", 1, NOW - 1), first_seen=since - 1)
    assert [f for f in rules.error_pattern_findings(old, NOW, since, RULES)
            if f.insight_type == "new_error_pattern"] == []


@pytest.mark.parametrize(("n", "fires"), [(10, True), (9, False)])
def test_recurring_error_over_threshold(n: int, fires: bool) -> None:
    state = errors_state(("p1", "importer", n - 1, NOW - 1800),
                         ("p1", "importer", 1, NOW - 10),
                         ("p1", "importer", 50, NOW - 3 * 3600))  # outside the last hour
    found = [f for f in rules.error_pattern_findings(state, NOW, NOW, RULES)
             if f.insight_type == "recurring_error"]
    if not fires:
        assert found == []
        return
    [finding] = found
    assert finding.key == "recurring_error:p1"
    assert finding.content["last_hour"] == n


# -- throughput and quiet sources ------------------------------------------------------------------


def test_throughput_drop_fires_below_half_the_baseline() -> None:
    state = metrics_state(("importer/rows_per_s", [1000.0] * 30, BASELINE_AT),
                          ("importer/rows_per_s", [400.0] * 5, CURRENT_AT))
    [finding] = rules.throughput_drops(state, NOW, RULES)
    assert finding.key == "throughput_drop:importer/rows_per_s"
    assert finding.content["current_mean"] == 400.0
    assert finding.content["baseline_mean"] == 1000.0
    assert finding.content["ratio"] == 0.4


@pytest.mark.parametrize(("series", "base_n", "cur"), [
    ("importer/rows_per_s", 30, 600.0),   # dropped, but not below half
    ("importer/rows_per_s", 19, 100.0),   # too little baseline
    ("importer/rows", 30, 100.0),         # not a throughput series
], ids=["above-half", "few-baseline", "not-throughput"])
def test_throughput_drop_quiet_cases(series: str, base_n: int, cur: float) -> None:
    state = metrics_state((series, [1000.0] * base_n, BASELINE_AT),
                          (series, [cur] * 5, CURRENT_AT))
    assert rules.throughput_drops(state, NOW, RULES) == []


def test_quiet_source() -> None:
    state = metrics_state(("old/events", [1.0], NOW - 2000), ("old/other", [1.0], NOW - 1990),
                          ("fresh/events", [1.0], NOW - 100))
    [finding] = rules.quiet_sources(state, NOW, LIVENESS, expected={"old", "fresh"})
    last_bucket = int(NOW - 1990) - int(NOW - 1990) % 60  # the source's newest series
    assert finding.key == f"source_quiet:old:{last_bucket + 60}"  # one key per quiet spell
    assert finding.priority == "low" and finding.once
    # silent since the end of its last minute bucket
    assert finding.content["silent_s"] == round(NOW - (last_bucket + 60))
    assert finding.content["silent_s"] >= LIVENESS.quiet_after_s


def test_quiet_source_only_for_expected_sources_and_not_internal_series() -> None:
    state = metrics_state(("old/events", [1.0], NOW - 2000),
                          ("bridge/proj/run/latency_ms", [1.0], NOW - 2000),
                          ("bridge/local/chain:route/latency_ms", [1.0], NOW - 2000),
                          ("bridge/runs_per_s", [1.0], NOW - 10))
    assert rules.quiet_sources(state, NOW, LIVENESS) == []  # nobody expects anything
    found = rules.quiet_sources(state, NOW, LIVENESS,
                                expected={"bridge", "bridge/proj", "bridge/local"})
    assert [f.content["source"] for f in found] == ["bridge/proj"]  # bridge itself reports
    judged = RulesConfig(judge_internal=True)
    assert [f.content["source"] for f in rules.quiet_sources(
        state, NOW, LIVENESS, expected={"bridge/local"}, rules=judged)] == ["bridge/local"]


def test_internal_series_are_not_judged_unless_configured() -> None:
    series = "langsmith_bridge/local/chain:route/latency_ms"
    state = metrics_state((series, [100.0] * 30, BASELINE_AT), (series, [300.0] * 30, CURRENT_AT))
    assert rules.latency_regressions(state, NOW, RULES) == []
    [finding] = rules.latency_regressions(state, NOW, RulesConfig(judge_internal=True))
    assert finding.key == f"latency_regression:{series}"
    # a series judged elsewhere (by the agent that produced it) is skipped too
    other = metrics_state(("api/latency_ms", [100.0] * 30, BASELINE_AT),
                          ("api/latency_ms", [300.0] * 30, CURRENT_AT))
    assert rules.latency_regressions(other, NOW, RULES, {"api/latency_ms"}.__contains__) == []


# -- deduplication across ticks --------------------------------------------------------------------


def emit_findings(state: dict[str, Any], now: float, since: float) -> dict[str, Any]:
    """What the coordinator's review does with findings: one insight event per finding."""
    out = Emitter(now)
    for f in rules.evaluate(state, now, since, RULES, LIVENESS):
        out.emit(events.insight(f.insight_type, f.content, COORDINATOR, f.priority, f.key,
                                now=now))
    return out.update()


def test_findings_are_deduplicated_by_key_across_ticks() -> None:
    state = metrics_state(("api/latency_ms", [100.0] * 30, BASELINE_AT),
                          ("api/latency_ms", [300.0] * 30, CURRENT_AT))
    for i in range(3):  # three ticks, the regression persists (evidence changes slightly)
        if i:
            state = apply_update(state, metrics_state(("api/latency_ms", [310.0], NOW + i)))
        state = apply_update(state, emit_findings(state, NOW + i, NOW + i - 1))
    regressions = {k: v for k, v in state["insights"].items()
                   if v["body"]["insight_type"] == "latency_regression"}
    assert len(regressions) == 1
    [record] = regressions.values()
    assert record["occurrences"] == 3
    assert record["first_seen"] == NOW
    assert record["last_seen"] == NOW + 2
    assert record["body"]["content"]["current_count"] == 32  # newest evidence wins


def test_errors_an_agent_reports_itself_are_not_judged_again() -> None:
    b = DeltaBuilder()
    for i in range(12):
        b.error("p_rej", "RowRejected", "rows rejected: invalid e-mail", "x", "profile_import",
                CURRENT_AT + i, [CURRENT_AT, 1, i + 1])
    state = b.build()
    assert rules.error_spikes(state, NOW, RULES) == []
    assert rules.error_pattern_findings(state, NOW, NOW - 3600, RULES) == []
    judged = RulesConfig(self_reported_errors=[])
    assert [f.key for f in rules.error_spikes(state, NOW, judged)] == [
        "error_rate_spike:profile_import"]
