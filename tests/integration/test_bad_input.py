"""Bad input gets a precise error and changes nothing; secrets never reach the state; rows that
cannot be folded are quarantined with their reason (on every backend, through ``db_url``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest

from state import InvalidInput, OptimizationRecord, PerformanceMetric, SharedState

NAN = float("nan")
INF = float("inf")
LS_KEY = "lsv2_pt_0123456789abcdef0123456789abcdef_a1b2c3d4e5"
SECRETS = (LS_KEY, "lsv2_pt_", "hunter2", "swordfish", "AKIAABCDEFGHIJKLMNOP")


def metric(**changes: object) -> dict:
    return {"source_agent": "import", "name": "latency_ms", "value": 1.0, **changes}


def opt(**changes: object) -> dict:
    return {"optimization_type": "batch_size", "target": "import", **changes}


def future() -> float:
    return time.time() + 3600


Call = Callable[[SharedState], Awaitable[object]]

# (id, call, the field InvalidInput must name)
CASES: list[tuple[str, Call, str]] = [
    # performance metrics
    ("metric-nan", lambda s: s.add_performance_metric(metric(value=NAN)), "value"),
    ("metric-plus-inf", lambda s: s.add_performance_metric(metric(value=INF)), "value"),
    ("metric-minus-inf", lambda s: s.add_performance_metric(metric(value=-INF)), "value"),
    ("metric-str-value", lambda s: s.add_performance_metric(metric(value="1.5")), "value"),
    ("metric-bool-value", lambda s: s.add_performance_metric(metric(value=True)), "value"),
    ("metric-none-value", lambda s: s.add_performance_metric(metric(value=None)), "value"),
    ("metric-list-value", lambda s: s.add_performance_metric(metric(value=[1.0])), "value"),
    ("metric-missing-value", lambda s: s.add_performance_metric(
        {"source_agent": "import", "name": "latency_ms"}), "value"),
    ("metric-empty-name", lambda s: s.add_performance_metric(metric(name="")), "name"),
    ("metric-blank-name", lambda s: s.add_performance_metric(metric(name=" \t ")), "name"),
    ("metric-long-name", lambda s: s.add_performance_metric(metric(name="n" * 201)), "name"),
    ("metric-none-name", lambda s: s.add_performance_metric(metric(name=None)), "name"),
    ("metric-control-name", lambda s: s.add_performance_metric(metric(name="a\nb")), "name"),
    ("metric-slash-source", lambda s: s.add_performance_metric(metric(source_agent="a/b")),
     "source_agent"),
    ("metric-empty-source", lambda s: s.add_performance_metric(metric(source_agent="")),
     "source_agent"),
    ("metric-long-source", lambda s: s.add_performance_metric(metric(source_agent="a" * 201)),
     "source_agent"),
    ("metric-empty-unit", lambda s: s.add_performance_metric(metric(unit=" ")), "unit"),
    ("metric-future-timestamp", lambda s: s.add_performance_metric(metric(timestamp=future())),
     "timestamp"),
    ("metric-nan-timestamp", lambda s: s.add_performance_metric(metric(timestamp=NAN)),
     "timestamp"),
    ("metric-negative-timestamp", lambda s: s.add_performance_metric(metric(timestamp=-1)),
     "timestamp"),
    ("metric-str-timestamp", lambda s: s.add_performance_metric(metric(timestamp="yesterday")),
     "timestamp"),
    ("metric-unknown-field", lambda s: s.add_performance_metric(metric(colour="red")), "colour"),
    ("metric-not-a-metric", lambda s: s.add_performance_metric("latency=5"), "metric"),
    ("metric-batch-one-bad", lambda s: s.add_performance_metrics(
        [metric(value=1.0), metric(value=2.0), metric(value=NAN)]), "value"),
    # error patterns
    ("error-empty-type", lambda s: s.add_error_pattern("", "boom", "import"), "error_type"),
    ("error-blank-type", lambda s: s.add_error_pattern("  ", "boom", "import"), "error_type"),
    ("error-none-type", lambda s: s.add_error_pattern(None, "boom", "import"), "error_type"),
    ("error-long-type", lambda s: s.add_error_pattern("E" * 201, "boom", "import"),
     "error_type"),
    ("error-oversized-message", lambda s: s.add_error_pattern("E", "x" * 4001, "import"),
     "error_message"),
    ("error-none-message", lambda s: s.add_error_pattern("E", None, "import"), "error_message"),
    ("error-bytes-message", lambda s: s.add_error_pattern("E", b"boom", "import"),
     "error_message"),
    ("error-slash-source", lambda s: s.add_error_pattern("E", "boom", "a/b"), "source_agent"),
    ("error-empty-source", lambda s: s.add_error_pattern("E", "boom", ""), "source_agent"),
    # insights
    ("insight-unknown-priority", lambda s: s.add_insight("t", {"x": 1}, "c", priority="urgent"),
     "priority"),
    ("insight-uppercase-priority", lambda s: s.add_insight("t", {"x": 1}, "c", priority="HIGH"),
     "priority"),
    ("insight-none-priority", lambda s: s.add_insight("t", {"x": 1}, "c", priority=None),
     "priority"),
    ("insight-set-content", lambda s: s.add_insight("t", {1, 2}, "c"), "content"),
    ("insight-str-content", lambda s: s.add_insight("t", "slow", "c"), "content"),
    ("insight-set-in-content", lambda s: s.add_insight("t", {"ids": {1, 2}}, "c"), "content"),
    ("insight-object-in-content", lambda s: s.add_insight("t", {"o": object()}, "c"),
     "content"),
    ("insight-oversized-content", lambda s: s.add_insight("t", {"blob": "x" * 20_000}, "c"),
     "content"),
    ("insight-nan-content", lambda s: s.add_insight("t", {"p95": NAN}, "c"), "content"),
    ("insight-nested-inf-content", lambda s: s.add_insight("t", {"a": [1, {"b": -INF}]}, "c"),
     "content"),
    ("insight-int-key-content", lambda s: s.add_insight("t", {1: "x"}, "c"), "content"),
    ("insight-empty-type", lambda s: s.add_insight("", {"x": 1}, "c"), "insight_type"),
    ("insight-long-type", lambda s: s.add_insight("t" * 201, {"x": 1}, "c"), "insight_type"),
    ("insight-slash-source", lambda s: s.add_insight("t", {"x": 1}, "a/b"), "source_agent"),
    ("insight-blank-source", lambda s: s.add_insight("t", {"x": 1}, " "), "source_agent"),
    ("mark-empty-insight-id", lambda s: s.mark_insight_acted_upon(""), "insight_id"),
    # agents and heartbeats
    ("register-empty-id", lambda s: s.register_agent(""), "agent_id"),
    ("register-blank-id", lambda s: s.register_agent("   "), "agent_id"),
    ("register-none-id", lambda s: s.register_agent(None), "agent_id"),
    ("register-slash-id", lambda s: s.register_agent("a/b"), "agent_id"),
    ("register-long-id", lambda s: s.register_agent("a" * 201), "agent_id"),
    ("register-zero-interval", lambda s: s.register_agent("x", interval_s=0), "interval_s"),
    ("register-negative-interval", lambda s: s.register_agent("x", interval_s=-5), "interval_s"),
    ("register-nan-interval", lambda s: s.register_agent("x", interval_s=NAN), "interval_s"),
    ("register-inf-interval", lambda s: s.register_agent("x", interval_s=INF), "interval_s"),
    ("register-str-interval", lambda s: s.register_agent("x", interval_s="30"), "interval_s"),
    ("register-blank-kind", lambda s: s.register_agent("x", kind="  "), "kind"),
    ("register-set-meta", lambda s: s.register_agent("x", tags={"a"}), "meta"),
    ("heartbeat-empty-id", lambda s: s.update_agent_heartbeat("", {}), "agent_id"),
    ("heartbeat-slash-id", lambda s: s.receive_heartbeat("a/b", {}), "agent_id"),
    ("heartbeat-not-a-dict", lambda s: s.update_agent_heartbeat("x", "running"),
     "heartbeat_data"),
    ("heartbeat-nan", lambda s: s.update_agent_heartbeat("x", {"load": NAN}), "heartbeat_data"),
    ("heartbeat-oversized", lambda s: s.update_agent_heartbeat("x", {"blob": "x" * 5000}),
     "heartbeat_data"),
    ("heartbeat-blank-status", lambda s: s.update_agent_heartbeat("x", {"status": " "}),
     "heartbeat_data.status"),
    # optimization records
    ("opt-future-timestamp", lambda s: s.add_optimization_record(opt(timestamp=future())),
     "timestamp"),
    ("opt-unknown-outcome", lambda s: s.add_optimization_record(opt(outcome="meh")), "outcome"),
    ("opt-empty-type", lambda s: s.add_optimization_record(opt(optimization_type="")),
     "optimization_type"),
    ("opt-long-target", lambda s: s.add_optimization_record(opt(target="t" * 201)), "target"),
    ("opt-set-before", lambda s: s.add_optimization_record(opt(before={"a": {1}})), "before"),
    ("opt-nan-after", lambda s: s.add_optimization_record(opt(after={"x": NAN})), "after"),
    ("opt-str-success", lambda s: s.add_optimization_record(opt(success="maybe")), "success"),
    ("opt-unknown-field", lambda s: s.add_optimization_record(opt(colour="red")), "colour"),
    ("opt-not-a-record", lambda s: s.add_optimization_record("batch_size"), "record"),
    # system state
    ("system-api-key", lambda s: s.update_system_state({"api_key": "abc"}), "api_key"),
    ("system-env-api-key", lambda s: s.update_system_state({"LANGSMITH_API_KEY": "abc"}),
     "LANGSMITH_API_KEY"),
    ("system-password", lambda s: s.update_system_state({"db_password": "abc"}),
     "db_password"),
    ("system-empty", lambda s: s.update_system_state({}), "updates"),
    ("system-not-a-dict", lambda s: s.update_system_state("mode=busy"), "updates"),
    ("system-nan-value", lambda s: s.update_system_state({"load": NAN}), "updates"),
    ("system-set-value", lambda s: s.update_system_state({"ids": {1}}), "updates"),
    ("system-oversized", lambda s: s.update_system_state({"blob": "x" * 20_000}), "updates"),
    ("system-empty-key", lambda s: s.update_system_state({"": 1}), "updates key"),
    # config
    ("config-empty", lambda s: s.update_config({}), "updates"),
    ("config-not-a-dict", lambda s: s.update_config("ticker.interval_s=1"), "updates"),
    ("config-unknown-section", lambda s: s.update_config({"nope": {"x": 1}}), "nope"),
    ("config-unknown-key", lambda s: s.update_config({"retention": {"minutes": 5}}),
     "retention.minutes"),
    ("config-str-for-int", lambda s: s.update_config({"retention": {"minute_buckets": "10"}}),
     "retention.minute_buckets"),
    ("config-bool-for-int", lambda s: s.update_config({"retention": {"minute_buckets": True}}),
     "retention.minute_buckets"),
    ("config-float-for-int", lambda s: s.update_config({"retention": {"minute_buckets": 1.5}}),
     "retention.minute_buckets"),
    ("config-negative-interval", lambda s: s.update_config({"ticker": {"interval_s": -1}}),
     "ticker.interval_s"),
    ("config-zero-interval", lambda s: s.update_config({"ticker": {"interval_s": 0}}),
     "ticker.interval_s"),
    ("config-nan-interval", lambda s: s.update_config({"ticker": {"interval_s": NAN}}),
     "ticker.interval_s"),
    ("config-inf-unbounded", lambda s: s.update_config({"rules": {"latency_ratio": INF}}),
     "rules.latency_ratio"),
    ("config-out-of-range", lambda s: s.update_config({"retention": {"checkpoints": 1}}),
     "retention.checkpoints"),
    ("config-api-key", lambda s: s.update_config({"api_key": "abc"}), "api_key"),
    ("config-agent-api-key", lambda s: s.update_config({"agents": {"bridge": {"api_key": "x"}}}),
     "agents.bridge.api_key"),
    ("config-option-token", lambda s: s.update_config(
        {"agents": {"bridge": {"options": {"langsmith_token": "x"}}}}),
     "agents.bridge.options.langsmith_token"),
    ("config-agent-negative-interval", lambda s: s.update_config(
        {"agents": {"bridge": {"interval_s": -1}}}), "agents.bridge.interval_s"),
    ("config-agent-bad-cron", lambda s: s.update_config(
        {"agents": {"bridge": {"cron": "every day"}}}), "agents.bridge.cron"),
    ("config-unknown-agent", lambda s: s.update_config({"agents": {"ghost": {"page_size": 5}}}),
     "agents.ghost"),
    ("config-option-set", lambda s: s.update_config(
        {"agents": {"bridge": {"options": {"ids": {1, 2}}}}}), "agents.bridge.options.ids"),
    ("config-option-nan", lambda s: s.update_config(
        {"agents": {"bridge": {"options": {"threshold": NAN}}}}),
     "agents.bridge.options.threshold"),
    # read arguments
    ("triage-list-action", lambda s: s.update_insights(["x"], []), "action"),  # fuzz-found
    ("triage-unknown-action", lambda s: s.update_insights(["x"], "snooze"), "action"),
    ("read-insights-priority", lambda s: s.get_insights(priority="urgent"), "priority"),
    ("read-errors-min-frequency", lambda s: s.get_error_patterns(min_frequency=0),
     "min_frequency"),
    ("read-errors-window", lambda s: s.get_error_patterns(time_window_hours=-1),
     "time_window_hours"),
    ("read-summary-hours", lambda s: s.get_performance_summary(hours=0), "hours"),
    ("read-summary-nan-hours", lambda s: s.get_performance_summary(hours=NAN), "hours"),
    ("read-optimizations-hours", lambda s: s.get_recent_optimizations(hours=-1), "hours"),
    ("read-active-age", lambda s: s.get_active_agents(max_age_minutes=-1), "max_age_minutes"),
]


async def write_baseline(shared: SharedState) -> None:
    """Some folded and some pending state, so "nothing changed" is checked against both."""
    await shared.register_agent("bridge", kind="langsmith_bridge", interval_s=60)
    await shared.update_config({"agents": {"bridge": {"kind": "langsmith_bridge"}}})
    await shared.add_performance_metrics(metric(value=float(v)) for v in range(1, 11))
    await shared.add_error_pattern("ValueError", "bad row 7", "import")
    await shared.flush()
    await shared.update_agent_heartbeat("bridge", {"status": "running"})
    await shared.add_insight("latency_regression", {"p95_ms": 900}, "coordinator",
                             priority="high")
    await shared.add_optimization_record(opt(record_id="opt_base"))
    await shared.update_system_state({"mode": "normal"})
    await shared.add_performance_metric(metric(value=100.0))


@pytest.fixture
async def shared(db_url: str):
    async with SharedState.open(db_url, producer="tests") as s:
        await write_baseline(s)
        yield s


@pytest.mark.parametrize(("call", "field"), [pytest.param(c, f, id=i) for i, c, f in CASES])
async def test_bad_input_raises_invalid_input_and_writes_nothing(
    shared: SharedState, call: Call, field: str
) -> None:
    before = await shared.export_state()
    pending = await shared.backend.pending_count()
    with pytest.raises(InvalidInput) as err:
        await call(shared)
    assert isinstance(err.value, ValueError)
    assert err.value.field == field, str(err.value)
    assert await shared.backend.pending_count() == pending
    assert await shared.export_state() == before
    # the writer is not poisoned: the next good write lands and counts exactly
    await shared.add_performance_metric(metric(value=1000.0))
    await shared.flush()
    summary = (await shared.get_performance_summary())["series"]["import/latency_ms"]
    assert (summary["count"], summary["max"]) == (12, 1000.0)


def test_every_case_id_is_unique() -> None:
    ids = [i for i, _, _ in CASES]
    assert len(ids) == len(set(ids))


async def test_model_constructors_reject_bad_values() -> None:
    """The records of the public API sketch validate on construction (a ValueError)."""
    with pytest.raises(ValueError, match="finite"):
        PerformanceMetric(source_agent="a", name="m", value=NAN)
    with pytest.raises(ValueError, match="/"):
        PerformanceMetric(source_agent="a/b", name="m", value=1.0)
    with pytest.raises(ValueError, match="future"):
        OptimizationRecord(optimization_type="x", target="y", timestamp=future())


async def test_restore_with_bad_document_changes_nothing(shared: SharedState) -> None:
    before = await shared.export_state()
    bad = json.loads(json.dumps(before))
    bad["channels"]["config"] = {"retention.minute_buckets": {"value": "many", "stamp": [1, 0, 0]}}
    with pytest.raises(ValueError):
        await shared.restore_state(bad, force=True)
    with pytest.raises(ValueError):
        await shared.restore_state({"format": "nope"}, force=True)
    assert await shared.export_state() == before


@pytest.mark.parametrize("where", ["key", "value"])
async def test_restore_refuses_a_lone_surrogate_anywhere(shared: SharedState, where: str) -> None:
    """No database or JSON document can store one: refused naming the place (found by the
    fuzz test on PostgreSQL: an agents key '\ud800' reached the saver's msgpack)."""
    await shared.register_agent("svc", kind="svc")
    before = await shared.export_state()
    bad = json.loads(json.dumps(before))
    agents = bad["channels"]["agents"]
    if where == "key":
        agents["\ud800"] = {}
    else:
        agents["svc"]["kind"] = "bad \udfff kind"
    with pytest.raises(InvalidInput, match="lone surrogate") as caught:
        await shared.restore_state(bad, force=True)
    assert caught.value.field.startswith("document")
    assert await shared.export_state() == before


# -- secrets -------------------------------------------------------------------------------------

async def test_secrets_never_reach_state_exports_or_reads(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        p1 = await shared.add_error_pattern(
            "AuthError", f"login failed with key {LS_KEY} and password=hunter2 for user 12",
            "bridge")
        p2 = await shared.add_error_pattern(
            "AuthError", "login failed with key lsv2_pt_ffffffffffffffffffff and "
                         "password=swordfish for user 99", "bridge")
        assert p1 == p2  # the secret does not split the pattern either
        await shared.add_insight("leak", {"note": f"found {LS_KEY} in logs",
                                          "password": "hunter2",
                                          "nested": {"dsn": "postgresql://u:hunter2@db/x"},
                                          "aws": "AKIAABCDEFGHIJKLMNOP"}, "coordinator")
        await shared.update_agent_heartbeat("bridge", {"status": "running",
                                                       "auth": "Bearer " + LS_KEY})
        await shared.register_agent("bridge", kind="langsmith_bridge", token="hunter2")
        await shared.update_system_state({"db": {"password": "hunter2"},
                                          "last_error": "password=hunter2"})
        await shared.add_optimization_record(opt(details={"cmd": f"--key {LS_KEY}"}))
        await shared.update_config({"agents": {"bridge": {
            "kind": "langsmith_bridge",
            "options": {"endpoint": "https://u:hunter2@api.example.com", "note": LS_KEY}}}})

        async def reads() -> str:
            return json.dumps([
                await shared.export_state(),
                await shared.get_error_patterns(),
                await shared.get_insights(),
                await shared.get_system_state(),
                await shared.get_agents(),
                await shared.get_recent_optimizations(),
            ])

        pending = await shared.backend.read_inbox(1000)
        assert len(pending) == 8
        for row in pending:  # nothing secret even in the durable inbox
            payload = bytes(row.payload).decode() if not isinstance(row.payload, str) \
                else row.payload
            assert not any(s in payload for s in SECRETS), payload

        for _ in range(2):  # overlaid and folded
            text = await reads()
            assert not any(s in text for s in SECRETS)
            assert "[REDACTED]" in text
            [pattern] = await shared.get_error_patterns()
            assert pattern["count"] == 2
            assert "password=[REDACTED]" in pattern["sample_message"]
            [insight] = await shared.get_insights()
            assert insight["content"]["password"] == "[REDACTED]"
            await shared.flush()


# -- quarantine ----------------------------------------------------------------------------------

async def test_malformed_inbox_rows_are_quarantined(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        await shared.add_performance_metrics(
            {"source_agent": "api", "name": "m", "value": 2.0} for _ in range(5))
        stream = await shared.backend.open_stream("x")
        now = time.time()

        def raw(kind: str, payload: dict) -> tuple[str, bytes]:
            return kind, orjson.dumps(payload)

        rows = [
            ("metric", b"not json"),
            raw("metric", {"s": "raw/m", "v": 4.0, "t": now}),
            raw("metric", {"s": "raw/m", "v": "fast", "t": now}),
            raw("bogus", {"t": now}),
            ("metric", b"[1, 2, 3]"),
            raw("metric", {"s": "raw/m", "v": 6.0}),  # no timestamp
            raw("metric", {"s": "raw/m", "v": 1.0, "t": 1e300}),
            raw("insight", {"id": "ins_x", "type": "t", "a": "a", "p": "urgent", "c": {},
                            "t": now}),
            raw("cfg", {"u": {"retention.minute_buckets": "many"}, "t": now}),
            raw("metric", {"s": "raw/m", "v": 8.0, "t": now}),
        ]
        await shared.backend.append(stream, [(i, k, p) for i, (k, p) in enumerate(rows, 1)])
        await shared.add_error_pattern("E", "after the raw rows", "api")
        bad_seqs = [1, 3, 4, 5, 6, 7, 8, 9]

        # reads before the fold already skip the bad rows
        series = (await shared.get_performance_summary())["series"]
        assert (series["raw/m"]["count"], series["raw/m"]["mean"]) == (2, 6.0)
        assert series["api/m"]["count"] == 5

        report = await shared.flush()
        assert (report.folded, report.quarantined) == (5 + 2 + 1, len(bad_seqs))
        system = await shared.get_system_state()
        assert system["stats"]["quarantined"] == len(bad_seqs)
        assert system["stats"]["events_folded"] == 8
        assert system["inbox"]["pending"] == 0
        assert system["config"]["retention"]["minute_buckets"] == 120
        assert await shared.get_insights() == []
        series = (await shared.get_performance_summary())["series"]
        assert (series["raw/m"]["count"], series["raw/m"]["mean"]) == (2, 6.0)
        assert series["api/m"]["count"] == 5
        assert [p["count"] for p in await shared.get_error_patterns()] == [1]

        quarantined = await shared.backend.quarantined()
        assert sorted((q["stream"], q["seq"]) for q in quarantined) == [
            (stream, seq) for seq in bad_seqs]
        reasons = {q["seq"]: q["reason"] for q in quarantined}
        assert all(reasons.values())
        assert "JSON" in reasons[1]
        assert "v: Input should be a valid number" in reasons[3]  # the field, by name
        assert "bogus" in reasons[4]
        assert "not an object" in reasons[5]
        assert "t: Field required" in reasons[6]
        assert "t: Input should be less than" in reasons[7]
        assert "urgent" in reasons[8]
        assert {q["kind"] for q in quarantined if q["seq"] == 4} == {"bogus"}

        again = await shared.flush()
        assert (again.folded, again.quarantined) == (0, 0)
        assert len(await shared.backend.quarantined()) == len(bad_seqs)
        assert (await shared.get_system_state())["stats"]["quarantined"] == len(bad_seqs)


async def test_reads_and_flush_survive_a_bad_row_between_good_ones(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        stream = await shared.backend.open_stream("x")
        now = time.time()
        good = orjson.dumps({"s": "raw/m", "v": 1.0, "t": now})
        await shared.backend.append(stream, [(1, "metric", good), (2, "metric", b"{"),
                                             (3, "metric", good)])
        assert math.isclose(
            (await shared.get_performance_summary())["overall"]["count"], 2)
        assert (await shared.flush()).quarantined == 1
        await shared.backend.append(stream, [(4, "metric", good)])
        assert (await shared.flush()).folded == 1
        assert (await shared.get_performance_summary())["overall"]["count"] == 3
