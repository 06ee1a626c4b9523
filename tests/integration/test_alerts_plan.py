"""The notify step's decisions over a real state (written through the API, folded by a real
tick), judged at chosen times: repeats while an insight stays open, silence once it is
acknowledged or muted, a new alert when it regresses, resolved messages, routing, and the
liveness and quiet-source insights alerted like any other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from graph import runner
from nodes.notify import outbox_entries, plan
from state import PerformanceMetric, SharedState


@pytest.fixture
async def shared(db_url: str) -> AsyncIterator[SharedState]:
    async with SharedState.open(db_url, producer="test") as s:
        await s.update_config({
            "agents": {a: {"enabled": False}
                       for a in ("system_monitor", "langsmith_bridge", "profile_import")},
            "alerts": {"repeat_s": 600, "channels": {
                "ops": {"type": "webhook"},
                "quiet": {"type": "slack", "priorities": ["low"], "types": ["source_quiet"]},
                "noresolve": {"type": "email", "send_resolved": False, "repeat_s": 0}}}})
        yield s


def step(state: dict[str, Any], now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the notify step at ``now``: the state after it and the alerts it added."""
    before = {e["key"] for e in outbox_entries(state)}
    new = plan(state, now)
    if new is None:
        return state, []
    after = {**state, "alerts": new}
    return after, [e for e in outbox_entries(after) if e["key"] not in before]


def events(alerts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((a["channel"], a["event"]) for a in alerts)


async def test_repeat_ack_regress_resolve(shared: SharedState) -> None:
    iid = await shared.add_insight("disk_full", {"summary": "disk full"}, "probe",
                                   priority="high", dedupe_key="disk")
    await runner.tick(shared)
    state = await shared.read()
    firing = [e for e in outbox_entries(state) if e["insight_id"] == iid]
    assert events(firing) == [("noresolve", "firing"), ("ops", "firing")]
    t0 = firing[0]["at"]  # when the tick's notify step sent it

    state, new = step(state, t0 + 599)
    assert new == []  # not yet repeat_s
    state, new = step(state, t0 + 600)
    assert events(new) == [("ops", "repeat")]  # noresolve has repeat_s 0: never repeats
    state, new = step(state, t0 + 601)
    assert new == []

    await shared.update_insights([iid], "acknowledge")
    state = {**(await shared.read()), "alerts": state["alerts"]}
    state, new = step(state, t0 + 5000)
    assert new == []  # acknowledged: no repeats

    await shared.add_insight("disk_full", {"summary": "disk full again"}, "probe",
                             priority="high", dedupe_key="disk")  # fires again: regressed
    state = {**(await shared.read()), "alerts": state["alerts"]}
    state, new = step(state, t0 + 5001)
    assert events(new) == [("noresolve", "firing"), ("ops", "firing")]
    assert all(a["status"] == "regressed" for a in new)

    await shared.update_insights([iid], "resolve")
    state = {**(await shared.read()), "alerts": state["alerts"]}
    state, new = step(state, t0 + 5002)
    assert events(new) == [("ops", "resolved")]  # noresolve: send_resolved false
    state, new = step(state, t0 + 5003)
    assert new == []
    assert len({a["key"] for a in outbox_entries(state)}) == len(outbox_entries(state))


async def test_muted_insights_and_types_do_not_alert(shared: SharedState) -> None:
    await shared.mute_insight_type("flaky", 3600)
    await shared.add_insight("flaky", {"summary": "x"}, "probe", priority="critical")
    iid = await shared.add_insight("disk_full", {"summary": "y"}, "probe", priority="critical")
    await shared.update_insights([iid], "mute", duration_s=3600)
    await runner.tick(shared)
    state = await shared.read()
    assert outbox_entries(state) == []
    t0 = time.time()
    state, new = step(state, t0 + 3601)  # both mutes over: now they alert
    assert sorted(a["insight_type"] for a in new if a["channel"] == "ops") == \
        ["disk_full", "flaky"]


async def test_dead_agent_and_quiet_source_alert_like_any_other(shared: SharedState) -> None:
    """agent_dead (critical) and source_quiet (low, routed by type to one channel only), both
    from the coordinator's own rules, reach the channels that route them."""
    await shared.register_agent("worker", kind="example", interval_s=3600)
    await shared.update_agent_heartbeat("worker", {"status": "running"})
    now = time.time()
    await shared.add_performance_metric(PerformanceMetric(
        source_agent="worker", name="rows", value=1.0, timestamp=now - 2000))  # quiet since
    await shared.register_agent("ghost", kind="example", interval_s=0.01)
    await shared.update_agent_heartbeat("ghost", {"status": "running"})
    await asyncio.sleep(0.2)  # at least 10 intervals: dead
    await runner.tick(shared)
    state = await shared.read()
    got = sorted((e["channel"], e["insight_type"]) for e in outbox_entries(state))
    assert got == [("noresolve", "agent_dead"), ("ops", "agent_dead"),
                   ("quiet", "source_quiet")]
