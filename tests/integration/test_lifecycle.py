"""The insight lifecycle through the SharedState API and the system graph, on every backend:
acknowledge, resolve, regress when fired again, reopen, mute by insight and by type, bulk
actions, "new since you last looked", and who did what when."""

from __future__ import annotations

import pytest

from graph import runner
from state import InvalidInput, SharedState
from tests.clock import FakeClock
from tests.integration.test_api import clock_of


@pytest.fixture
async def shared(db_url: str):
    async with SharedState.open(db_url, producer="tests", clock=FakeClock()) as s:
        yield s


async def _fire(shared: SharedState, key: str, priority: str = "high") -> str:
    return await shared.add_insight("error_rate_spike", {"key": key, "summary": key},
                                    "coordinator", priority=priority)


async def _one(shared: SharedState, iid: str) -> dict:
    (row,) = [i for i in await shared.get_insights() if i["insight_id"] == iid]
    return row


async def test_acknowledge_regress_resolve_reopen_with_history(
    shared: SharedState
) -> None:
    t0 = shared.clock() - 600
    with clock_of(shared).at(t0):
        iid = await _fire(shared, "a")
    with clock_of(shared).at(t0 + 10):
        assert await shared.update_insights([iid], "acknowledge", by="dashboard:s1") == [iid]
    row = await _one(shared, iid)
    assert (row["status"], row["state"], row["active"], row["by"]) == \
        ("acknowledged", "acknowledged", False, "dashboard:s1")
    assert row["acted_upon"] is True and row["acted_upon_at"] == t0 + 10
    counts = await shared.get_insight_counts()
    assert counts["open"] == 0 and counts["by_status"]["acknowledged"] == 1

    with clock_of(shared).at(t0 + 20):
        assert await _fire(shared, "a") == iid  # it fires again: regressed at once
    for _ in range(2):  # before and after the fold (which records it in the history)
        row = await _one(shared, iid)
        assert (row["status"], row["active"], row["since"]) == ("regressed", True, t0 + 20)
        assert await shared.get_insights(status="regressed") == [row]
        assert await shared.get_insights(status="acknowledged") == []
        assert (await shared.get_system_state())["insights"]["open"] == 1
        await shared.flush()
    assert [(h["action"], h["by"]) for h in row["history"]] == [
        ("acknowledge", "dashboard:s1"), ("regressed", "coordinator")]

    with clock_of(shared).at(t0 + 30):
        await shared.update_insights([iid], "resolve")
    with clock_of(shared).at(t0 + 40):
        await shared.update_insights([iid], "reopen", by="cli")
    await shared.flush()
    row = await _one(shared, iid)
    assert (row["status"], row["since"], row["by"]) == ("open", t0 + 40, "cli")
    assert [(h["action"], h["by"], h["at"]) for h in row["history"]][-2:] == [
        ("resolve", "tests", t0 + 30), ("reopen", "cli", t0 + 40)]


async def test_mute_by_insight_and_by_type_and_unmute(shared: SharedState) -> None:
    a = await _fire(shared, "a")
    b = await _fire(shared, "b", priority="critical")
    other = await shared.add_insight("latency_regression", {"key": "x"}, "coordinator")
    await shared.update_insights([a], "mute", duration_s=3600)
    row = await _one(shared, a)
    assert row["state"] == "muted" and row["status"] == "open" and not row["active"]
    assert row["muted_until"] == pytest.approx(shared.clock() + 3600, abs=60)
    counts = await shared.get_insight_counts()
    assert counts["open"] == 2 and counts["by_status"]["muted"] == 1
    await shared.mute_insight_type("error_rate_spike", 600)
    assert {i["insight_id"] for i in await shared.get_insights(status="muted")} == {a, b}
    assert [i["insight_id"] for i in await shared.get_insights(status="open")] == [other]
    assert (await shared.get_system_state())["insights"]["open_by_priority"]["critical"] == 0
    await shared.mute_insight_type("error_rate_spike", None)  # unmute the type
    await shared.update_insights([a], "unmute")
    await shared.flush()
    assert {i["insight_id"] for i in await shared.get_insights(status="open")} == {a, b, other}


async def test_bulk_actions_are_all_or_nothing(shared: SharedState) -> None:
    ids = [await _fire(shared, str(n)) for n in range(5)]
    pending = await shared.backend.pending_count()
    with pytest.raises(InvalidInput, match="no such insight"):
        await shared.update_insights([*ids, "ins_nope"], "resolve")
    with pytest.raises(InvalidInput, match="action"):
        await shared.update_insights(ids, "delete")
    with pytest.raises(InvalidInput, match="duration_s"):
        await shared.update_insights(ids, "mute")
    with pytest.raises(InvalidInput, match="duration_s"):
        await shared.update_insights(ids, "mute", duration_s=float("nan"))
    assert await shared.backend.pending_count() == pending  # nothing written
    assert await shared.update_insights(ids[:3], "resolve") == ids[:3]
    assert {i["insight_id"] for i in await shared.get_insights(status="resolved")} == \
        set(ids[:3])
    assert await shared.update_insights([*ids, "ins_nope"], "acknowledge",
                                        missing_ok=True) == ids


async def test_new_since_last_looked(shared: SharedState) -> None:
    t0 = shared.clock() - 600
    with clock_of(shared).at(t0):
        a = await _fire(shared, "a")
        b = await _fire(shared, "b")
    assert (await shared.get_insight_counts("me"))["new"] == 2  # never looked: all open
    with clock_of(shared).at(t0 + 10):
        await shared.update_insights([b], "acknowledge")
        await shared.mark_insights_seen("me")
    assert (await shared.get_insight_counts("me"))["new"] == 0
    with clock_of(shared).at(t0 + 20):
        await _fire(shared, "c")  # a new one
        await _fire(shared, "a")  # still open: not new
        await _fire(shared, "b")  # regressed since I looked: new
    counts = await shared.get_insight_counts("me")
    assert counts["new"] == 2 and counts["open"] == 3
    assert (await shared.get_insight_counts("someone-else"))["new"] == 3
    assert a


async def test_liveness_alarm_is_resolved_by_the_coordinator_on_recovery(
    shared: SharedState
) -> None:
    await shared.register_agent("svc", kind="service", interval_s=1)
    with clock_of(shared).at(shared.clock() - 60):
        await shared.update_agent_heartbeat("svc", {"status": "running"})
    await runner.tick(shared, wait=30)
    (stale,) = await shared.get_insights(insight_type="agent_dead") or \
        await shared.get_insights(insight_type="agent_stale")
    assert stale["active"]
    await shared.update_agent_heartbeat("svc", {"status": "running"})
    await runner.tick(shared, wait=30)
    row = await _one(shared, stale["insight_id"])
    assert (row["status"], row["by"]) == ("resolved", "coordinator")


def test_bga_status_shows_counts_by_status(tmp_path) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from graph.cli import app
    from tests.integration.test_cli import flat

    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def write() -> None:
        async with SharedState.open(url, producer="tests") as s:
            ids = [await _fire(s, str(n)) for n in range(4)]
            await s.update_insights(ids[:1], "acknowledge")
            await s.update_insights(ids[1:2], "resolve")
            await s.update_insights(ids[2:3], "mute", duration_s=600)

    asyncio.run(write())
    runner = CliRunner()
    text = flat(runner.invoke(app, ["status", "--db", url]).output)
    assert "insights: 1 open of 4 (high 1) insights by status: open 1, regressed 0, " \
           "acknowledged 1, resolved 1, muted 1" in text
    doc = json.loads(runner.invoke(app, ["status", "--json", "--db", url]).output)
    assert doc["system"]["insights"]["by_status"] == {
        "open": 1, "regressed": 0, "acknowledged": 1, "resolved": 1, "muted": 1}
