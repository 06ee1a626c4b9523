"""The system graph end to end: one ``graph.runner.tick`` at a time, on every backend.

Agents are the example agents of ``tests.agents.example``, wired in through the shared config
only (one config line each): the graph is never changed to add one. Nothing sleeps: tests of
time (liveness, cron) move a fake clock (``tests.clock``) that the handle and its ticks share.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, get_type_hints

import pytest
from pydantic import TypeAdapter
from typing_extensions import is_typeddict

from graph.runner import tick
from graph.system import build_system_graph
from nodes.schedule import next_due
from state import InvalidInput, SharedState
from state.config import AgentSection
from state.fingerprint import fingerprint
from state.fold import KEY_MERGES
from state.reducers import lww, merge_agent, merge_agents, merge_insight
from state.schema import (
    CHANNELS,
    REDUCERS,
    AgentRecord,
    InsightRecord,
    OptimizationEntry,
    PatternRecord,
    Register,
    SeriesRecord,
    SystemState,
    TickRecord,
)
from tests.agents.example import ECHO, FAILING, SLOW, THROUGHPUT
from tests.clock import FakeClock

TINY = 0.001  # an interval that makes an agent due on every tick


@pytest.fixture
async def shared(db_url: str):
    async with SharedState.open(db_url, producer="tests") as s:
        yield s


async def agents(shared: SharedState) -> dict[str, dict[str, Any]]:
    return {a["agent_id"]: a for a in await shared.get_agents()}


async def agent_data(shared: SharedState, agent_id: str) -> dict[str, Any]:
    return ((await shared.read()).get("agent_data", {}).get(agent_id) or {}).get("value") or {}


async def system_value(shared: SharedState, key: str) -> Any:
    return (await shared.get_system_state())["values"].get(key)


async def series(shared: SharedState) -> dict[str, dict[str, Any]]:
    return (await shared.get_performance_summary(hours=1))["series"]


async def configure(shared: SharedState, **sections: dict[str, Any]) -> None:
    await shared.update_config({"agents": sections})


# -- fan-out ---------------------------------------------------------------------------------------


async def test_builtin_and_configured_agent_run_in_one_tick(shared: SharedState) -> None:
    await configure(shared, echo={"class": ECHO, "interval_s": 1})
    report = await tick(shared)
    assert report.events_folded == 1  # the config update, folded exactly once

    by_id = await agents(shared)
    assert set(by_id) == {"echo", "langsmith_bridge", "profile_import",
                          "system_monitor"}  # + built-in agents
    for agent_id, kind in (("echo", "echo"), ("langsmith_bridge", "langsmith_bridge"),
                           ("profile_import", "profile_import"),
                           ("system_monitor", "system_monitor")):
        assert by_id[agent_id]["kind"] == kind
        assert by_id[agent_id]["reported_status"] == "ok"
        assert by_id[agent_id]["heartbeat"]["tick"] == 1
        assert by_id[agent_id]["heartbeats"] == 1
    assert by_id["echo"]["interval_s"] == 1

    found = await series(shared)
    assert found["echo/ticks"]["count"] == 1
    assert found["echo/ticks"]["mean"] == 1
    assert found["system_monitor/rss_mb"]["count"] == 1
    assert found["echo/step_ms"]["count"] == 1  # every step is timed
    assert await agent_data(shared, "echo") == {"counter": 1}
    last = await system_value(shared, "last_tick")
    assert last["n"] == 1
    assert last["agents_run"] == ["echo", "langsmith_bridge", "profile_import", "system_monitor"]


async def test_agent_that_raises_does_not_break_the_tick(shared: SharedState) -> None:
    await configure(shared, echo={"class": ECHO, "interval_s": TINY},
                    fail_a={"class": FAILING, "interval_s": TINY},
                    fail_b={"class": FAILING, "interval_s": TINY})
    await tick(shared)
    await tick(shared)

    by_id = await agents(shared)
    for agent_id in ("fail_a", "fail_b"):
        hb = by_id[agent_id]
        assert hb["reported_status"] == "error"
        assert hb["heartbeat"]["last_error"] == "RuntimeError: boom 43"
        assert hb["heartbeats"] == 2
    assert by_id["echo"]["reported_status"] == "ok"
    assert by_id["system_monitor"]["reported_status"] == "ok"
    assert await agent_data(shared, "echo") == {"counter": 2}  # the others' updates landed
    assert (await series(shared))["echo/ticks"]["count"] == 2

    # "boom 42" and "boom 43", from two agents: one fingerprinted pattern
    patterns = await shared.get_error_patterns(error_type="RuntimeError")
    assert len(patterns) == 1
    pattern = patterns[0]
    assert pattern["pattern_id"] == fingerprint("RuntimeError", "boom 42")
    assert pattern["pattern_id"] == fingerprint("RuntimeError", "boom 43")
    assert pattern["count"] == 4
    assert pattern["source_agents"] == ["fail_a", "fail_b"]
    assert pattern["sample_message"] in ("boom 42", "boom 43")

    new = await shared.get_insights(insight_type="new_error_pattern")
    assert [i["content"]["pattern_id"] for i in new] == [pattern["pattern_id"]]


async def test_slow_agent_times_out_and_others_still_land(shared: SharedState) -> None:
    await configure(shared, echo={"class": ECHO, "interval_s": TINY},
                    slow={"class": SLOW, "interval_s": TINY, "budget_s": 0.3})
    await tick(shared)  # SlowAgent sleeps 30 s: the tick returning at all is the point

    by_id = await agents(shared)
    assert by_id["slow"]["reported_status"] == "timeout"
    assert "budget of 0.3 s" in by_id["slow"]["heartbeat"]["last_error"]
    assert by_id["echo"]["reported_status"] == "ok"
    assert await agent_data(shared, "echo") == {"counter": 1}
    # the step was cancelled at its budget: it never woke up, and what it did before stays
    assert await agent_data(shared, "slow") == {"started": True}
    assert "slow/woke_up" not in await series(shared)
    timeouts = await shared.get_error_patterns(error_type="AgentTimeout")
    assert [p["source_agents"] for p in timeouts] == [["slow"]]


async def test_agent_data_persists_across_ticks(shared: SharedState) -> None:
    await configure(shared, echo={"class": ECHO, "interval_s": TINY})
    counters = []
    for _ in range(3):
        await tick(shared)
        counters.append((await agent_data(shared, "echo"))["counter"])
    assert counters == [1, 2, 3]
    assert (await agents(shared))["echo"]["heartbeats"] == 3
    assert (await series(shared))["echo/ticks"]["count"] == 3


async def test_agent_settings_come_from_its_section_with_class_defaults(
    shared: SharedState,
) -> None:
    # thr leaves batch_size unset (the class default, 100, applies); thr_small sets it and an
    # option, so its batches (80) are above its threshold (50)
    await configure(shared, thr={"class": THROUGHPUT, "interval_s": TINY},
                    thr_small={"class": THROUGHPUT, "interval_s": TINY, "batch_size": 80,
                               "options": {"threshold": 50}})
    await tick(shared)
    by_id = await agents(shared)
    assert by_id["thr"]["reported_status"] == "ok", by_id["thr"]["heartbeat"]
    assert by_id["thr_small"]["reported_status"] == "ok", by_id["thr_small"]["heartbeat"]
    assert await agent_data(shared, "thr") == {"last_batch_size": 100, "last_rate": 1000.0}
    assert await agent_data(shared, "thr_small") == {"last_batch_size": 80, "last_rate": 400.0}


# -- schedules -------------------------------------------------------------------------------------


async def test_interval_agent_runs_first_tick_then_waits(shared: SharedState) -> None:
    await configure(shared, echo={"class": ECHO, "interval_s": 3600})
    await tick(shared)
    assert (await agent_data(shared, "echo"))["counter"] == 1
    await tick(shared)
    assert (await agent_data(shared, "echo"))["counter"] == 1
    assert (await agents(shared))["echo"]["heartbeats"] == 1
    last = await system_value(shared, "last_tick")
    assert last["n"] == 2
    assert "echo" not in last["agents_run"]


async def test_cron_agent_runs_at_most_once_per_minute(db_url: str) -> None:
    minute = float(int(time.time()) // 60 * 60)
    clock = FakeClock(minute + 1)
    async with SharedState.open(db_url, producer="tests", clock=clock) as shared:
        await configure(shared, echo={"class": ECHO, "cron": "* * * * *"})
        for _ in range(3):  # all inside one minute
            await tick(shared)
            clock.advance(19)
        assert (await agent_data(shared, "echo"))["counter"] == 1
        echo = (await agents(shared))["echo"]
        assert echo["schedule"] == "* * * * *"
        assert echo["heartbeats"] == 1
        clock.now = minute + 60  # the next minute boundary: due again
        await tick(shared)
        assert (await agent_data(shared, "echo"))["counter"] == 2


def test_cron_next_due_is_the_next_minute_boundary() -> None:
    section = AgentSection.model_validate({"class": ECHO, "cron": "* * * * *"})
    hour = 1_699_999_200.0  # a whole hour (multiple of 3600)
    last = hour + 12.5
    assert next_due(section, None) == 0.0
    assert next_due(section, last) == hour + 60
    hourly = AgentSection.model_validate({"class": ECHO, "cron": "0 * * * *"})
    assert next_due(hourly, last) == hour + 3600


# -- liveness --------------------------------------------------------------------------------------
# The clock is a fake one the test moves: an outside agent reporting every 60 s goes stale past
# 2 x 60 s and dead past 6 x 60 s of silence, whatever the load on the machine.


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def timed(db_url: str, clock: FakeClock):
    async with SharedState.open(db_url, producer="tests", clock=clock) as s:
        yield s


async def test_stale_agent_alarm_and_recovery(timed: SharedState, clock: FakeClock) -> None:
    shared = timed
    await shared.update_config({"liveness": {"stale_factor": 2.0, "dead_factor": 6.0}})
    await shared.register_agent("worker", kind="external", interval_s=60)
    await shared.update_agent_heartbeat("worker", {"status": "running"})
    await tick(shared)
    assert (await agents(shared))["worker"]["liveness"] == "active"
    healthy = await system_value(shared, "health")

    clock.advance(120)  # exactly 2 x 60 s: not yet stale
    await tick(shared)
    assert (await agents(shared))["worker"]["liveness"] == "active"
    assert await shared.get_insights(insight_type="agent_stale") == []

    clock.advance(30)  # 150 s: past 2 x 60 s, well before 6 x 60 s
    await tick(shared)
    assert (await agents(shared))["worker"]["liveness"] == "stale"
    stale = await shared.get_insights(insight_type="agent_stale")
    assert len(stale) == 1
    assert stale[0]["priority"] == "high"
    assert stale[0]["acted_upon"] is False
    assert stale[0]["content"]["agent"] == "worker"
    assert stale[0]["content"]["expected_interval_s"] == 60
    assert stale[0]["content"]["last_heartbeat_age_s"] == 150.0
    degraded = await system_value(shared, "health")
    assert degraded["score"] < healthy["score"]
    assert "1 stale agents" in degraded["reasons"]

    clock.advance(10)
    await tick(shared)  # still stale: the same insight again, not a second row
    stale = await shared.get_insights(insight_type="agent_stale")
    assert len(stale) == 1
    assert stale[0]["occurrences"] == 2
    assert stale[0]["content"]["last_heartbeat_age_s"] == 160.0

    await shared.receive_heartbeat("worker", {"status": "running"})
    await tick(shared)
    assert (await agents(shared))["worker"]["liveness"] == "active"
    stale = await shared.get_insights(insight_type="agent_stale")
    assert [i["acted_upon"] for i in stale] == [True]
    assert await shared.get_insights(insight_type="agent_stale", acted_upon=False) == []
    recovered = await shared.get_insights(insight_type="agent_recovered")
    assert [i["content"]["agent"] for i in recovered] == ["worker"]
    assert (await system_value(shared, "health"))["score"] > degraded["score"]


async def test_dead_agent_is_purged(timed: SharedState, clock: FakeClock) -> None:
    shared = timed
    await shared.update_config({"liveness": {"stale_factor": 2.0, "dead_factor": 6.0,
                                             "purge_after_s": 180}})
    await shared.register_agent("worker", kind="external", interval_s=60)
    await shared.update_agent_heartbeat("worker", {"status": "running"})
    await tick(shared)
    assert "worker" in await agents(shared)

    clock.advance(420)  # dead after 6 x 60 s, purged only after 360 + 180 s
    await tick(shared)
    assert (await agents(shared))["worker"]["liveness"] == "dead"
    dead = await shared.get_insights(insight_type="agent_dead")
    assert [(i["priority"], i["content"]["agent"]) for i in dead] == [("critical", "worker")]
    assert "1 dead agents" in (await system_value(shared, "health"))["reasons"]

    clock.advance(120)  # 540 s: exactly at the purge horizon, still kept
    await tick(shared)
    assert (await agents(shared))["worker"]["liveness"] == "dead"

    clock.advance(1)
    await tick(shared)
    assert "worker" not in await agents(shared)
    assert "system_monitor" in await agents(shared)  # only the dead one went
    await tick(shared)
    assert "worker" not in await agents(shared)


async def test_a_tick_reads_time_from_its_handle_s_clock(timed: SharedState,
                                                         clock: FakeClock) -> None:
    clock.advance(3600.5)
    await tick(timed)
    last = await system_value(timed, "last_tick")
    assert last["started_at"] == clock.now
    assert last["duration_ms"] == 0  # the fake clock stood still during the tick
    assert (await timed.read())["stats"]["last_tick_at"] == clock.now
    assert {a["last_heartbeat"] for a in (await agents(timed)).values()} == {clock.now}


# -- configuration ---------------------------------------------------------------------------------

BAD_CONFIG = {
    "unknown_agent": {"agents": {"ghost": {"interval_s": 5.0}}},
    "string_interval": {"agents": {"system_monitor": {"interval_s": "5"}}},
    "negative_interval": {"agents": {"system_monitor": {"interval_s": -1.0}}},
    "bad_cron": {"agents": {"echo": {"class": ECHO, "cron": "every minute"}}},
    "unknown_agent_key": {"agents": {"system_monitor": {"colour": "blue"}}},
    "unknown_section": {"nonsense": {"x": 1}},
}


@pytest.mark.parametrize("updates", list(BAD_CONFIG.values()), ids=list(BAD_CONFIG))
async def test_bad_config_is_rejected_and_changes_nothing(
    shared: SharedState, updates: dict[str, Any]
) -> None:
    await configure(shared, echo={"class": ECHO, "interval_s": 3600})
    await tick(shared)
    before = await shared.export_state()
    with pytest.raises(InvalidInput):
        await shared.update_config(updates)
    assert await shared.export_state() == before
    await tick(shared)  # and the next tick still runs with the old config
    assert (await agents(shared))["system_monitor"]["interval_s"] == 30.0


async def test_unloadable_agent_class_becomes_an_insight(shared: SharedState) -> None:
    await configure(shared, ghost={"class": "tests.agents.example:NoSuchAgent"},
                    echo={"class": ECHO, "interval_s": TINY})
    await tick(shared)
    by_id = await agents(shared)
    assert "ghost" not in by_id
    assert by_id["echo"]["reported_status"] == "ok"
    found = await shared.get_insights(insight_type="agent_misconfigured")
    assert [(i["priority"], i["content"]["agent"]) for i in found] == [("high", "ghost")]
    assert "NoSuchAgent" in found[0]["content"]["reason"]


# -- exactly once ----------------------------------------------------------------------------------


async def test_api_events_are_counted_exactly_once_across_ticks_and_flushes(db_url: str) -> None:
    def metrics(n: int) -> list[dict[str, Any]]:
        return [{"source_agent": "ext", "name": "events", "value": 1.0} for _ in range(n)]

    async with SharedState.open(db_url, producer="writer") as writer, \
            SharedState.open(db_url, producer="ticker") as ticker:
        await writer.add_performance_metrics(metrics(100))
        for i in range(10):
            await writer.add_error_pattern("ValueError", f"bad row {i}", "ext")
        await tick(ticker)
        await writer.flush()
        await writer.add_performance_metrics(metrics(50))
        await tick(ticker)
        await tick(ticker)
        await ticker.flush()

        async def write_more() -> None:
            for _ in range(5):
                await writer.add_performance_metrics(metrics(10))
                await asyncio.sleep(0)

        await asyncio.gather(write_more(), tick(ticker), writer.flush(), tick(ticker))
        await tick(ticker)
        await writer.flush()
        await tick(ticker)

        for reader in (writer, ticker):
            found = (await reader.get_performance_summary(hours=1))["series"]["ext/events"]
            assert found["count"] == 200
            assert found["mean"] == 1.0
            [pattern] = await reader.get_error_patterns(error_type="ValueError")
            assert pattern["count"] == 10
        assert await ticker.backend.pending_count() == 0
        stats = (await ticker.get_system_state())["stats"]
        assert stats["events_folded"] == 200 + 10
        assert stats["ticks"] == 7


# -- the typed records -----------------------------------------------------------------------------


def _undocumented(value: Any, record: Any, where: str) -> list[str]:
    """Keys of ``value`` (and of its nested records) that ``record``'s TypedDict does not name."""
    hints = get_type_hints(record, include_extras=True)
    out = [f"{where}.{k}" for k in value if k not in hints]
    for key, hint in hints.items():
        if key in value and is_typeddict(hint):
            out += _undocumented(value[key], hint, f"{where}.{key}")
    return out


async def test_the_state_has_the_shapes_its_typed_records_document(
    timed: SharedState, clock: FakeClock
) -> None:
    shared = timed
    await configure(shared, echo={"class": ECHO, "interval_s": TINY},
                    fail_a={"class": FAILING, "interval_s": TINY})
    await shared.update_config({"liveness": {"stale_factor": 2.0, "dead_factor": 6.0,
                                             "purge_after_s": 3600}})
    await shared.register_agent("worker", kind="external", interval_s=60)
    await shared.update_agent_heartbeat("worker", {"status": "running"})
    await shared.add_optimization_record({"optimization_type": "note", "target": "echo"})
    await shared.mark_insights_seen("ops")
    await tick(shared)
    clock.advance(600)  # the worker goes dead: a liveness verdict and an alarm
    await tick(shared)
    [alarm] = await shared.get_insights(insight_type="agent_dead")
    await shared.update_insights([alarm["insight_id"]], "acknowledge")
    await shared.mute_insight_type("new_error_pattern", 3600)
    await shared.flush()
    state = dict(await shared.read())

    TypeAdapter(SystemState).validate_python(state, strict=False)
    assert set(state) == set(CHANNELS) - {"alerts"}  # no alert channel is configured
    records = {"agents": AgentRecord, "metrics": SeriesRecord, "error_patterns": PatternRecord,
               "insights": InsightRecord, "optimizations": OptimizationEntry,
               "triage": Register, "system": Register, "config": Register,
               "agent_data": Register, "alerts": Register}
    missing = [f"{ch}.{k}.{f}" for ch, record in records.items()
               for k, v in state.get(ch, {}).items() for f in _undocumented(v, record, "")]
    missing += _undocumented(state["tick"], TickRecord, "tick")
    assert missing == []
    assert state["agents"]["worker"]["liveness"]["value"] == "dead"
    assert state["insights"][alarm["insight_id"]]["status"]["s"] == "acknowledged"


def test_the_graph_merges_each_channel_with_the_reducer_its_annotation_names() -> None:
    channels = build_system_graph().channels
    assert {ch: channels[ch].operator for ch in CHANNELS} == REDUCERS  # type: ignore[attr-defined]
    assert REDUCERS["agents"] is merge_agents and REDUCERS["tick"] is lww
    # the fold merges one record at a time with the per-key merge of the same reducers
    assert KEY_MERGES["agents"] is merge_agent and KEY_MERGES["insights"] is merge_insight
    assert KEY_MERGES["config"] is lww and "tick" not in KEY_MERGES
