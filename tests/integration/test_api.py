"""Integration tests of the SharedState API on every backend (``db_url``: sqlite file, memory).

Numbers are exact where the design makes them exact (counts, min, max, mean, occurrences) and
within the sketch's 2 % relative accuracy for quantiles. Writes "in the past" use the public
``timestamp`` argument where the API has one; for errors and heartbeats, which the API stamps
itself, the handle's clock (a ``tests.clock.FakeClock``) is set back for the write only.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from state import InvalidInput, OptimizationRecord, PerformanceMetric, SharedState
from tests.clock import FakeClock

HOUR = 3600.0

# 1..1000, written in a scrambled order (7919 is coprime with 1000).
LATENCIES = [float((i * 7919) % 1000 + 1) for i in range(1000)]


def other_url(db_url: str, tmp_path: Path, name: str) -> str:
    """A second fresh database of the same backend as ``db_url``."""
    if db_url.startswith("sqlite:///"):
        return f"sqlite:///{tmp_path / f'{name}.db'}"
    return f"memory://{uuid.uuid4().hex}"


def clock_of(shared: SharedState) -> FakeClock:
    """The fake clock the ``shared`` fixture opened its handle with."""
    assert isinstance(shared.clock, FakeClock)
    return shared.clock


def assert_quantile(estimate: float | None, values: list[float], q: float) -> None:
    """``estimate`` within 2 % of the true q-quantile (between the two ranks around it)."""
    assert estimate is not None
    ordered = sorted(values)
    rank = q * (len(ordered) - 1)
    lo, hi = ordered[math.floor(rank)], ordered[math.ceil(rank)]
    assert lo - 0.02 * abs(lo) - 1e-9 <= estimate <= hi + 0.02 * abs(hi) + 1e-9, \
        (q, estimate, lo, hi)


@pytest.fixture
async def shared(db_url: str):
    async with SharedState.open(db_url, producer="tests", clock=FakeClock()) as s:
        yield s


# -- a known data set ----------------------------------------------------------------------------

async def populate(
    shared: SharedState, *, old: bool = True
) -> dict[str, str]:
    """Write one of everything; returns the ids the API handed back.

    With ``old``, some events are older than the minute tier keeps: the fold drops their
    minute buckets (the exported channels change) while every ``get_*`` result stays the same.
    """
    now = shared.clock()
    await shared.register_agent("profile_import", kind="profile_import", interval_s=30)
    await shared.register_agent("bridge", kind="langsmith_bridge", interval_s=60)
    await shared.update_agent_heartbeat("profile_import", {"status": "running", "rows": 5})
    await shared.receive_heartbeat("bridge", {"status": "idle"})
    await shared.add_performance_metrics(
        PerformanceMetric(source_agent="profile_import", name="latency_ms", value=v, unit="ms")
        for v in LATENCIES)
    await shared.add_performance_metrics(
        {"source_agent": "bridge", "name": "runs", "value": 2.0, "timestamp": now - 3 * HOUR}
        for _ in range(10))
    ids = {"timeout": await shared.add_error_pattern(
        "TimeoutError", "timeout after 31 s for id 8f3a91c2", "profile_import")}
    await shared.add_error_pattern("TimeoutError", "timeout after 7 s for id 01bc77ee", "bridge")
    ids["value"] = await shared.add_error_pattern("ValueError", "bad email 'x@' in row 12",
                                                  "profile_import")
    with clock_of(shared).at(now - (30 * HOUR if old else 60)):
        await shared.add_error_pattern("TimeoutError", "timeout after 9 s for id 77aa0b1c",
                                       "profile_import")
    ids["insight"] = await shared.add_insight("latency_regression", {"p95_ms": 900},
                                              "coordinator", priority="high")
    await shared.add_insight("latency_regression", {"p95_ms": 900}, "coordinator",
                             priority="high")
    ids["low"] = await shared.add_insight("note", {"text": "all quiet"}, "coordinator",
                                          priority="low")
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="batch_size", target="profile_import", before={"batch": 100},
        after={"batch": 200}, record_id="opt_a"))
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="interval", target="bridge", success=False, outcome="rolled_back",
        record_id="opt_old", timestamp=now - 48 * HOUR))
    await shared.update_system_state({"mode": "normal", "release": {"version": "1.2"}})
    await shared.update_config({"retention": {"minute_buckets": 240},
                                "agents": {"bridge": {"kind": "langsmith_bridge",
                                                      "options": {"projects": ["a", "b"]}}}})
    return ids


async def views(shared: SharedState) -> dict:
    """Every ``get_*`` read, minus the fold bookkeeping that a flush changes by design."""
    system = await shared.get_system_state()
    system.pop("stats")
    system.pop("inbox")
    return {
        "perf_1h": await shared.get_performance_summary(hours=1),
        "perf_6h": await shared.get_performance_summary(hours=6),
        "errors": await shared.get_error_patterns(),
        "errors_48h": await shared.get_error_patterns(time_window_hours=48),
        "errors_min2": await shared.get_error_patterns(min_frequency=2),
        "insights": await shared.get_insights(),
        "optimizations": await shared.get_recent_optimizations(hours=72),
        "agents": await shared.get_agents(),
        "active": await shared.get_active_agents(),
        "system": system,
    }


async def export_without_stats(shared: SharedState) -> dict:
    doc = await shared.export_state()
    doc["channels"].pop("stats")
    return doc


# -- metrics -------------------------------------------------------------------------------------

async def test_performance_summary_exact_stats_and_quantiles(shared: SharedState) -> None:
    await shared.add_performance_metrics(
        PerformanceMetric(source_agent="a", name="latency_ms", value=v, unit="ms")
        for v in LATENCIES)
    for _ in range(200):
        await shared.add_performance_metric({"source_agent": "b", "name": "rows", "value": 50})

    for _ in range(2):  # before and after folding
        summary = await shared.get_performance_summary(hours=1)
        lat = summary["series"]["a/latency_ms"]
        assert (lat["source_agent"], lat["name"], lat["unit"]) == ("a", "latency_ms", "ms")
        assert lat["count"] == 1000
        assert lat["min"] == 1.0 and lat["max"] == 1000.0
        assert lat["mean"] == pytest.approx(500.5, rel=1e-12)
        assert lat["rate"] == pytest.approx(1000 / 3600)
        for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            assert_quantile(lat[key], LATENCIES, q)

        rows = summary["series"]["b/rows"]
        assert rows["count"] == 200
        assert rows["min"] == rows["max"] == rows["mean"] == 50.0
        assert rows["p50"] == rows["p95"] == rows["p99"] == 50.0
        assert rows["unit"] is None

        overall = summary["overall"]
        assert overall["count"] == 1200
        assert overall["min"] == 1.0 and overall["max"] == 1000.0
        assert overall["mean"] == pytest.approx((500_500 + 200 * 50) / 1200, rel=1e-12)
        assert_quantile(overall["p95"], [*LATENCIES, *[50.0] * 200], 0.95)
        assert summary["window_hours"] == 1.0
        await shared.flush()


async def test_p50_accurate_for_wide_latency_distribution(shared: SharedState) -> None:
    rnd = random.Random(1)
    values = [rnd.lognormvariate(3, 1.2) for _ in range(5000)]
    await shared.add_performance_metrics(
        {"source_agent": "a", "name": "latency_ms", "value": v} for v in values)
    s = (await shared.get_performance_summary())["series"]["a/latency_ms"]
    assert s["count"] == 5000
    assert_quantile(s["p99"], values, 0.99)
    assert_quantile(s["p95"], values, 0.95)
    assert_quantile(s["p50"], values, 0.50)


async def test_performance_summary_negative_and_zero_values(shared: SharedState) -> None:
    values = [float(v) for v in range(-50, 51)]
    await shared.add_performance_metrics(
        {"source_agent": "a", "name": "delta", "value": v} for v in values)
    s = (await shared.get_performance_summary())["series"]["a/delta"]
    assert (s["count"], s["min"], s["max"], s["mean"]) == (101, -50.0, 50.0, 0.0)
    assert s["p50"] == 0.0
    assert_quantile(s["p95"], values, 0.95)
    assert_quantile(s["p99"], values, 0.99)


async def test_performance_summary_hours_excludes_old_metrics(shared: SharedState) -> None:
    now = shared.clock()
    await shared.add_performance_metrics(
        {"source_agent": "a", "name": "m", "value": 10.0, "timestamp": now - 3 * HOUR}
        for _ in range(7))
    await shared.add_performance_metrics(
        {"source_agent": "a", "name": "m", "value": 1.0} for _ in range(4))
    await shared.add_performance_metric(
        {"source_agent": "a", "name": "only_old", "value": 3.0, "timestamp": now - 3 * HOUR})

    async def check() -> None:
        one = await shared.get_performance_summary(hours=1)
        assert one["series"]["a/m"]["count"] == 4
        assert one["series"]["a/m"]["max"] == 1.0
        assert "a/only_old" not in one["series"]
        assert one["overall"]["count"] == 4
        six = await shared.get_performance_summary(hours=6)
        assert six["series"]["a/m"]["count"] == 11
        assert six["series"]["a/m"]["mean"] == pytest.approx((70 + 4) / 11)
        assert six["series"]["a/only_old"]["count"] == 1
        assert six["overall"]["count"] == 12
        assert six["overall"]["rate"] == pytest.approx(12 / (6 * HOUR))

    await check()
    await shared.flush()
    await check()


# -- error patterns ------------------------------------------------------------------------------

async def test_error_patterns_group_by_fingerprint(shared: SharedState) -> None:
    timeouts = ["timeout after 31 s for id 8f3a91c2", "timeout after 7 s for id 01bc77ee",
                "timeout after 120 s for id deadbeef1"]
    emails = ["bad email 'x@' in row 12", "bad email 'foo@bar.com' in row 9999"]
    users = ["user 3fa85f64-5717-4562-b3fc-2c963f66afa6 not found",
             "user 0b9e2a1c-1111-4222-8333-944455556666 not found"]
    ids = [await shared.add_error_pattern("TimeoutError", m, f"agent{i}")
           for i, m in enumerate(timeouts)]
    ids += [await shared.add_error_pattern("ValueError", m, "import") for m in emails]
    ids += [await shared.add_error_pattern("KeyError", m, "import") for m in users]
    other_type = await shared.add_error_pattern("RuntimeError", timeouts[0], "agent0")
    other_words = await shared.add_error_pattern("TimeoutError", "connect refused", "agent0")

    assert len(set(ids[0:3])) == 1 and len(set(ids[3:5])) == 1 and len(set(ids[5:7])) == 1
    assert len({ids[0], ids[3], ids[5], other_type, other_words}) == 5

    for _ in range(2):  # before and after folding
        patterns = await shared.get_error_patterns()
        by_id = {p["pattern_id"]: p for p in patterns}
        assert set(by_id) == {ids[0], ids[3], ids[5], other_type, other_words}
        t = by_id[ids[0]]
        assert (t["error_type"], t["count"], t["frequency"]) == ("TimeoutError", 3, 3)
        assert t["source_agents"] == ["agent0", "agent1", "agent2"]
        assert t["normalized_message"] == "timeout after <duration> for id <num>"
        assert t["sample_message"] in timeouts
        assert t["first_seen"] <= t["last_seen"]
        assert (by_id[ids[3]]["count"], by_id[ids[3]]["frequency"]) == (2, 2)
        assert by_id[ids[5]]["count"] == 2
        assert by_id[other_type]["error_type"] == "RuntimeError"
        assert by_id[other_type]["count"] == by_id[other_words]["count"] == 1
        assert patterns[0]["pattern_id"] == ids[0]  # most frequent first
        assert [p["frequency"] for p in patterns] == sorted(
            (p["frequency"] for p in patterns), reverse=True)
        await shared.flush()


async def test_error_patterns_filters(shared: SharedState) -> None:
    for i in range(5):
        await shared.add_error_pattern("TimeoutError", f"timeout after {i} s", "a")
    for i in range(2):
        await shared.add_error_pattern("ValueError", f"bad row {i}", "a")
    await shared.add_error_pattern("ValueError", "disk full", "a")

    def summary(patterns: list) -> list:
        return [(p["error_type"], p["frequency"]) for p in patterns]

    for _ in range(2):
        assert summary(await shared.get_error_patterns()) == [
            ("TimeoutError", 5), ("ValueError", 2), ("ValueError", 1)]
        assert summary(await shared.get_error_patterns(min_frequency=2)) == [
            ("TimeoutError", 5), ("ValueError", 2)]
        assert summary(await shared.get_error_patterns(min_frequency=6)) == []
        assert summary(await shared.get_error_patterns(error_type="ValueError")) == [
            ("ValueError", 2), ("ValueError", 1)]
        assert summary(await shared.get_error_patterns(error_type="ValueError",
                                                       min_frequency=2)) == [("ValueError", 2)]
        assert await shared.get_error_patterns(error_type="KeyError") == []
        await shared.flush()


async def test_error_patterns_time_window_excludes_old_occurrences(
    shared: SharedState
) -> None:
    now = shared.clock()
    with clock_of(shared).at(now - 30 * HOUR):
        for i in range(2):
            pid = await shared.add_error_pattern("IOError", f"read failed at {i}", "a")
        old_only = await shared.add_error_pattern("OSError", "gone", "a")
    with clock_of(shared).at(now - 3 * HOUR):
        await shared.add_error_pattern("IOError", "read failed at 9", "a")
    for i in range(3):
        assert await shared.add_error_pattern("IOError", f"read failed at {i}", "a") == pid

    for _ in range(2):
        one = await shared.get_error_patterns(time_window_hours=1)
        assert [(p["pattern_id"], p["frequency"], p["count"]) for p in one] == [(pid, 3, 6)]
        day = await shared.get_error_patterns(time_window_hours=24)
        assert [(p["pattern_id"], p["frequency"]) for p in day] == [(pid, 4)]
        two_days = {p["pattern_id"]: p for p in
                    await shared.get_error_patterns(time_window_hours=48)}
        assert two_days[pid]["frequency"] == 6
        assert two_days[old_only]["frequency"] == 1
        assert two_days[pid]["first_seen"] == pytest.approx(now - 30 * HOUR)
        assert await shared.get_error_patterns(time_window_hours=24, min_frequency=5) == []
        system = await shared.get_system_state()
        assert system["error_patterns"] == {"total": 2, "active_1h": 1, "events_1h": 3}
        await shared.flush()


# -- insights ------------------------------------------------------------------------------------

async def test_insights_dedupe_priority_and_acted_upon(shared: SharedState) -> None:
    a = await shared.add_insight("latency_regression", {"p95_ms": 900}, "coordinator",
                                 priority="high")
    assert await shared.add_insight("latency_regression", {"p95_ms": 900}, "coordinator",
                                    priority="high") == a
    k1 = await shared.add_insight("slow_import", {"key": "imp", "rows": 1}, "coordinator")
    k2 = await shared.add_insight("slow_import", {"key": "imp", "rows": 2}, "coordinator")
    d = await shared.add_insight("note", {"n": 1}, "coordinator", priority="low",
                                 dedupe_key="note-1")
    await shared.add_insight("note", {"n": 2}, "coordinator", priority="low",
                             dedupe_key="note-1")
    await shared.add_insight("note", {"n": 3}, "coordinator", priority="low",
                             dedupe_key="note-1")
    c = await shared.add_insight("outage", {"where": "db"}, "coordinator", priority="critical")
    assert k1 == k2
    assert len({a, k1, d, c}) == 4

    insights = await shared.get_insights()
    assert [i["insight_id"] for i in insights] == [c, a, k1, d]  # by priority
    by_id = {i["insight_id"]: i for i in insights}
    assert by_id[a]["occurrences"] == 2
    assert by_id[k1]["occurrences"] == 2
    assert by_id[k1]["content"] == {"key": "imp", "rows": 2}  # newest content wins
    assert by_id[k1]["priority"] == "medium"
    assert by_id[d]["occurrences"] == 3 and by_id[d]["content"] == {"n": 3}
    assert all(not i["acted_upon"] and i["acted_upon_at"] is None for i in insights)

    assert [i["insight_id"] for i in await shared.get_insights(priority="high")] == [a]
    assert [i["insight_id"] for i in await shared.get_insights(priority="low")] == [d]
    assert [i["insight_id"] for i in await shared.get_insights(insight_type="note")] == [d]
    assert [i["insight_id"] for i in await shared.get_insights(limit=2)] == [c, a]

    assert await shared.mark_insight_acted_upon(a) is True
    assert await shared.mark_insight_acted_upon("ins_0000000000000000") is False
    for _ in range(2):
        acted = await shared.get_insights(acted_upon=True)
        assert [i["insight_id"] for i in acted] == [a]
        assert acted[0]["acted_upon_at"] is not None
        assert [i["insight_id"] for i in await shared.get_insights(acted_upon=False)] == [c, k1, d]
        counts = (await shared.get_system_state())["insights"]
        assert counts == {"total": 4, "open": 3, "open_by_priority":
                          {"low": 1, "medium": 1, "high": 0, "critical": 1},
                          "by_status": {"open": 3, "regressed": 0, "acknowledged": 1,
                                        "resolved": 0, "muted": 0}, "new": 3, "informational": 0}
        await shared.flush()


async def test_mark_unknown_insight_writes_nothing(shared: SharedState) -> None:
    await shared.add_insight("t", {"x": 1}, "a")
    before = await shared.export_state()
    pending = await shared.backend.pending_count()
    assert await shared.mark_insight_acted_upon("ins_doesnotexist") is False
    assert await shared.backend.pending_count() == pending
    assert await shared.export_state() == before


# -- optimization records ------------------------------------------------------------------------

async def test_recent_optimizations_filters(shared: SharedState) -> None:
    now = shared.clock()
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="batch_size", target="import", record_id="opt_1",
        before={"batch": 100}, after={"batch": 200}, timestamp=now - 60))
    await shared.add_optimization_record({
        "optimization_type": "batch_size", "target": "import", "record_id": "opt_2",
        "success": False, "outcome": "rolled_back", "timestamp": now - 30})
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="interval", target="bridge", record_id="opt_3"))
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="interval", target="bridge", record_id="opt_old",
        timestamp=now - 48 * HOUR))
    # a newer version of opt_1 replaces it
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="batch_size", target="import", record_id="opt_1", outcome="kept",
        before={"batch": 100}, after={"batch": 200}, timestamp=now - 10))

    def ids(records: list) -> list:
        return [r["record_id"] for r in records]

    for _ in range(2):
        recent = await shared.get_recent_optimizations()
        assert ids(recent) == ["opt_3", "opt_1", "opt_2"]  # newest first
        opt1 = recent[1]
        assert opt1["outcome"] == "kept"
        assert opt1["timestamp"] == pytest.approx(now - 10)
        assert (opt1["before"], opt1["after"]) == ({"batch": 100}, {"batch": 200})
        assert ids(await shared.get_recent_optimizations("batch_size")) == ["opt_1", "opt_2"]
        assert ids(await shared.get_recent_optimizations(success_only=True)) == ["opt_3", "opt_1"]
        assert ids(await shared.get_recent_optimizations("batch_size", success_only=True)) == [
            "opt_1"]
        assert ids(await shared.get_recent_optimizations(hours=72)) == [
            "opt_3", "opt_1", "opt_2", "opt_old"]
        assert ids(await shared.get_recent_optimizations("interval", hours=72)) == [
            "opt_3", "opt_old"]
        assert (await shared.get_system_state())["optimizations"] == {"total": 4}
        await shared.flush()


# -- agents and heartbeats -----------------------------------------------------------------------

async def test_register_and_heartbeats(shared: SharedState) -> None:
    now = shared.clock()
    await shared.register_agent("fresh", kind="profile_import", interval_s=30, owner="team-a")
    await shared.register_agent(SimpleNamespace(agent_id="stale", kind="langsmith_bridge",
                                                interval_s=60, schedule="*/5 * * * *"))
    await shared.register_agent("silent")
    await shared.update_agent_heartbeat("fresh", {"status": "running", "rows": 5})
    with clock_of(shared).at(now - 11 * 60):  # past 2 x its cron's 5 min
        await shared.receive_heartbeat("stale", {"status": "running"})
    with clock_of(shared).at(now - 20 * 60):  # arrives late: must not win
        await shared.receive_heartbeat("fresh", {"status": "starting"})
    await shared.receive_heartbeat("fresh", {"status": "idle"})

    for _ in range(2):
        agents = {a["agent_id"]: a for a in await shared.get_agents()}
        assert set(agents) == {"fresh", "stale", "silent"}
        fresh = agents["fresh"]
        assert (fresh["kind"], fresh["interval_s"], fresh["meta"]) == (
            "profile_import", 30.0, {"owner": "team-a"})
        assert fresh["status"] == "idle" and fresh["heartbeat"] == {"status": "idle"}
        assert fresh["heartbeats"] == 3
        assert fresh["last_heartbeat"] >= now
        stale = agents["stale"]
        assert (stale["kind"], stale["interval_s"], stale["schedule"]) == (
            "langsmith_bridge", 60.0, "*/5 * * * *")
        assert stale["last_heartbeat"] == now - 660
        assert stale["heartbeats"] == 1
        silent = agents["silent"]
        assert (silent["kind"], silent["status"], silent["heartbeats"]) == (
            "agent", "registered", 0)
        assert silent["last_heartbeat"] is None

        assert [a["agent_id"] for a in await shared.get_active_agents()] == ["fresh"]
        assert [a["agent_id"] for a in await shared.get_active_agents(max_age_minutes=15)] == [
            "fresh", "stale"]
        assert (await shared.get_system_state())["agents"] == {
            "registered": 3, "active": 2, "stale": 1, "dead": 0, "unknown": 0}
        await shared.flush()


async def test_heartbeat_without_registration_creates_agent(shared: SharedState) -> None:
    await shared.update_agent_heartbeat("adhoc", {"status": "running"})
    [agent] = await shared.get_active_agents()
    assert (agent["agent_id"], agent["status"], agent["kind"], agent["heartbeats"]) == (
        "adhoc", "running", "unknown", 1)


# -- system state and config ---------------------------------------------------------------------

async def test_system_state_and_config_updates(shared: SharedState) -> None:
    await shared.update_system_state({"mode": "normal", "release": {"version": "1.2"}})
    await shared.update_system_state({"mode": "degraded"})
    await shared.update_config({"retention": {"minute_buckets": 60}})
    await shared.update_config({"ticker": {"interval_s": 2.5},
                                "agents": {"bridge": {"kind": "langsmith_bridge",
                                                      "page_size": 50,
                                                      "options": {"projects": ["a", "b"]}}}})
    await shared.update_config({"agents": {"bridge": {"page_size": 25}}})
    await shared.update_config({"retention": {"hour_buckets": 48}})

    for _ in range(2):
        system = await shared.get_system_state()
        assert system["values"] == {"mode": "degraded", "release": {"version": "1.2"}}
        config = system["config"]
        assert config["retention"]["minute_buckets"] == 60
        assert config["retention"]["hour_buckets"] == 48
        assert config["retention"]["day_buckets"] == 30  # default kept
        assert config["ticker"] == {"interval_s": 2.5, "fold_batch": 200_000}
        bridge = config["agents"]["bridge"]
        assert (bridge["kind"], bridge["page_size"], bridge["options"]) == (
            "langsmith_bridge", 25, {"projects": ["a", "b"]})
        await shared.flush()


# -- read-your-writes, flush ---------------------------------------------------------------------

async def test_reads_identical_before_and_after_flush(
    shared: SharedState
) -> None:
    await populate(shared)
    before = await views(shared)
    assert (await shared.get_system_state())["inbox"]["pending"] > 0
    report = await shared.flush()
    # metrics, old metrics, errors, insights, registrations, heartbeats, records, system, config
    assert report.folded == 1000 + 10 + 4 + 3 + 2 + 2 + 2 + 1 + 1
    assert report.quarantined == 0
    assert await views(shared) == before
    system = await shared.get_system_state()
    assert system["inbox"]["pending"] == 0
    assert system["stats"]["events_folded"] == report.folded


async def test_export_identical_before_and_after_flush(
    shared: SharedState
) -> None:
    await populate(shared, old=False)
    before = await export_without_stats(shared)
    assert (await shared.flush()).folded > 1000
    assert await export_without_stats(shared) == before


async def test_flush_is_idempotent(shared: SharedState) -> None:
    await shared.add_performance_metrics(
        {"source_agent": "a", "name": "m", "value": float(v)} for v in range(1, 101))
    await shared.add_error_pattern("E", "boom 1", "a")
    first = await shared.flush()
    assert (first.folded, first.quarantined) == (101, 0)
    second = await shared.flush()
    assert (second.folded, second.quarantined) == (0, 0)
    assert await shared.backend.pending_count() == 0
    summary = await shared.get_performance_summary()
    assert summary["series"]["a/m"]["count"] == 100
    assert summary["series"]["a/m"]["mean"] == pytest.approx(50.5)
    assert [p["count"] for p in await shared.get_error_patterns()] == [1]
    stats = (await shared.get_system_state())["stats"]
    assert (stats["events_folded"], stats["quarantined"]) == (101, 0)
    # writes after a flush fold once more, on top
    await shared.add_performance_metric({"source_agent": "a", "name": "m", "value": 1000.0})
    assert (await shared.flush()).folded == 1
    assert (await shared.flush()).folded == 0
    summary = await shared.get_performance_summary()
    assert summary["series"]["a/m"]["count"] == 101
    assert summary["series"]["a/m"]["max"] == 1000.0


async def test_reader_sees_writer_acknowledged_writes_before_flush(db_url: str) -> None:
    async with SharedState.open(db_url, producer="writer") as writer, \
            SharedState.open(db_url, producer="reader", read_only=True) as reader:
        await writer.add_performance_metrics(
            {"source_agent": "w", "name": "m", "value": float(v)} for v in range(1, 51))
        pid = await writer.add_error_pattern("E", "failed 3 times", "w")
        iid = await writer.add_insight("t", {"x": 1}, "w", priority="critical")
        await writer.update_agent_heartbeat("w", {"status": "running"})
        await writer.update_system_state({"mode": "busy"})

        seen = (await reader.get_performance_summary())["series"]["w/m"]
        assert (seen["count"], seen["min"], seen["max"], seen["mean"]) == (50, 1.0, 50.0, 25.5)
        assert [p["pattern_id"] for p in await reader.get_error_patterns()] == [pid]
        assert [i["insight_id"] for i in await reader.get_insights()] == [iid]
        assert [a["agent_id"] for a in await reader.get_active_agents()] == ["w"]
        assert (await reader.get_system_state())["values"] == {"mode": "busy"}
        assert await reader.export_state() == await writer.export_state()

        assert await writer.mark_insight_acted_upon(iid) is True
        assert (await reader.get_insights())[0]["acted_upon"] is True

        await writer.flush()
        assert await reader.export_state() == await writer.export_state()
        assert (await reader.get_performance_summary())["series"]["w/m"]["count"] == 50
        with pytest.raises(PermissionError):
            await reader.add_error_pattern("E", "x", "r")


async def test_two_writers_interleaved_count_exactly(db_url: str) -> None:
    async with SharedState.open(db_url, producer="one") as one, \
            SharedState.open(db_url, producer="two") as two:
        for i in range(30):
            await one.add_performance_metric({"source_agent": "x", "name": "m", "value": 1.0})
            await two.add_performance_metric({"source_agent": "x", "name": "m", "value": 3.0})
            if i == 10:
                await one.flush()
            if i == 20:
                await two.flush()
        for shared in (one, two):
            s = (await shared.get_performance_summary())["series"]["x/m"]
            assert (s["count"], s["mean"]) == (60, 2.0)
        await two.flush()
        assert (await one.flush()).folded == 0
        s = (await one.get_performance_summary())["series"]["x/m"]
        assert (s["count"], s["min"], s["max"]) == (60, 1.0, 3.0)
        assert (await one.get_system_state())["stats"]["events_folded"] == 60


# -- export / restore ----------------------------------------------------------------------------

async def test_export_is_json_and_restores_into_empty_database(
    shared: SharedState, db_url: str, tmp_path: Path
) -> None:
    await populate(shared)
    doc = await shared.export_state()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text) == doc
    assert "inbox" not in doc["channels"]
    source_views = await views(shared)

    async with SharedState.open(other_url(db_url, tmp_path, "restored")) as target:
        empty = await target.export_state()  # a read of an empty database changes nothing
        assert all(not v for v in empty["channels"].values())
        await target.restore_state(json.loads(text))
        assert await target.export_state() == doc
        assert await views(target) == source_views
        assert await target.backend.pending_count() == 0

        with pytest.raises(InvalidInput) as err:
            await target.restore_state(doc)
        assert err.value.field == "database"
        assert await target.export_state() == doc

    # the restored state is durable and foldable
    async with SharedState.open(other_url(db_url, tmp_path, "restored2")) as target:
        await target.restore_state(doc)
        await target.add_performance_metric(
            {"source_agent": "profile_import", "name": "latency_ms", "value": 5.0})
        await target.flush()
        s = (await target.get_performance_summary())["series"]["profile_import/latency_ms"]
        assert s["count"] == 1001


async def test_restore_refuses_non_empty_database_unless_forced(
    shared: SharedState, db_url: str, tmp_path: Path
) -> None:
    async with SharedState.open(other_url(db_url, tmp_path, "source")) as source:
        await source.add_insight("t", {"x": 1}, "a", priority="high")
        await source.add_performance_metric({"source_agent": "a", "name": "m", "value": 2.0})
        doc = await source.export_state()

    # unfolded writes alone make a database non-empty
    await shared.add_error_pattern("E", "only pending", "a")
    before = await shared.export_state()
    with pytest.raises(InvalidInput) as err:
        await shared.restore_state(doc)
    assert err.value.field == "database"
    assert await shared.export_state() == before

    await populate(shared)
    await shared.flush()
    before = await shared.export_state()
    with pytest.raises(InvalidInput):
        await shared.restore_state(doc)
    assert await shared.export_state() == before

    await shared.restore_state(doc, force=True)
    assert await shared.export_state() == doc
    assert [i["priority"] for i in await shared.get_insights()] == ["high"]
    assert await shared.get_error_patterns() == []


async def test_restore_rejects_foreign_document(shared: SharedState) -> None:
    with pytest.raises(ValueError):
        await shared.restore_state({"format": "something-else", "channels": {}})
    with pytest.raises(ValueError):
        await shared.restore_state({"format": "background-agents/state@1",
                                    "channels": {"bogus": {}}})
    assert await shared.backend.is_empty()


@pytest.mark.parametrize("value", [10**400, -(10**400), 2**64, 2**53 + 1, float("inf")])
async def test_restore_names_a_stat_too_big_and_changes_nothing(
        shared: SharedState, value: float) -> None:
    """A counter beyond 2**53 (or not finite) is refused by name; an int above a float's range
    once raised OverflowError from the finiteness check (found by test_fuzz_api)."""
    doc = {"format": "background-agents/state@1", "channels": {"stats": {"ticks": value}}}
    with pytest.raises(InvalidInput) as err:
        await shared.restore_state(doc, force=True)
    assert err.value.field == "channels.stats.ticks"
    assert "finite number" in str(err.value)
    assert await shared.backend.is_empty()
    await shared.restore_state({**doc, "channels": {"stats": {"ticks": 2**53}}}, force=True)
    assert (await shared.export_state())["channels"]["stats"] == {"ticks": 2**53}
