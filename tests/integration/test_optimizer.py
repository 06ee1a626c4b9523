"""Self-verifying optimization cycles through real ticks, on every backend.

``ThroughputAgent`` gets slower with bigger batches, so the optimizer's first move (doubling
``batch_size``) must be rolled back after the verification window; ``BatchLovingAgent`` gets
faster, so the same move is kept. Time is a fake clock (``tests.clock``) that each tick moves
on by a second and a test moves past the verification window; nothing sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest

from graph import runner
from state import SharedState
from tests.agents.example import BATCH_LOVING, THROUGHPUT
from tests.clock import FakeClock

VERIFY_S = 300.0
TINY = 0.001
STEP_S = 1.0  # how far the clock moves before each tick


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def shared(db_url: str, clock: FakeClock):
    async with SharedState.open(db_url, producer="tests", clock=clock) as s:
        yield s


async def tick(shared: SharedState) -> None:
    """One tick, a second after the last thing that happened (agents on a TINY interval are
    due again)."""
    clock = shared.clock
    assert isinstance(clock, FakeClock)
    clock.advance(STEP_S)
    await runner.tick(shared)


def past_the_window(shared: SharedState) -> None:
    assert isinstance(shared.clock, FakeClock)
    shared.clock.advance(VERIFY_S)


async def setup(shared: SharedState, agent_class: str, *, interval_s: float = 3600.0) -> None:
    await shared.update_config({
        "optimizer": {"enabled": True, "interval_s": interval_s, "verify_s": VERIFY_S,
                      "min_samples": 3},
        "agents": {"thr": {"class": agent_class, "interval_s": TINY, "batch_size": 100}},
    })


async def batch_size(shared: SharedState) -> int:
    return (await shared.get_system_state())["config"]["agents"]["thr"]["batch_size"]


async def records(shared: SharedState) -> list[dict[str, Any]]:
    return await shared.get_recent_optimizations(optimization_type="tune_batch_size")


async def agent_data(shared: SharedState) -> dict[str, Any]:
    return (await shared.read())["agent_data"]["thr"]["value"]


async def cycle(shared: SharedState) -> dict[str, Any] | None:
    return (await shared.get_system_state())["values"].get("last_optimization_cycle")


async def test_change_that_hurts_is_rolled_back(shared: SharedState) -> None:
    await setup(shared, THROUGHPUT)
    await tick(shared)  # the agent reports 1000 rows/s, then the first cycle doubles the batch
    assert await batch_size(shared) == 200
    [applied] = await records(shared)
    assert applied["outcome"] == "applied"
    assert applied["success"] is True
    assert applied["target"] == "thr"
    assert applied["before"] == {"batch_size": 100, "rows_per_s": 1000.0}
    assert applied["after"] == {"batch_size": 200}
    assert applied["details"]["baseline_samples"] == 5

    await tick(shared)  # runs with the new batch size: slower; still under verification
    assert (await agent_data(shared))["last_rate"] == 400.0
    assert [r["outcome"] for r in await records(shared)] == ["applied"]
    assert await batch_size(shared) == 200

    past_the_window(shared)
    await tick(shared)  # past the window: judged worse, rolled back
    assert await batch_size(shared) == 100
    [judged] = await records(shared)
    assert judged["record_id"] == applied["record_id"]
    assert judged["outcome"] == "rolled_back"
    assert judged["success"] is False
    assert judged["before"] == applied["before"]
    assert judged["after"]["batch_size"] == 200
    assert judged["after"]["rows_per_s"] < judged["before"]["rows_per_s"]
    assert judged["after"]["samples"] >= 10  # two steps at 200
    assert judged["details"]["gain"] < 0
    assert judged["details"]["reason"] == "no improvement"

    await tick(shared)  # the agent runs with the restored value again
    data = await agent_data(shared)
    assert (data["last_batch_size"], data["last_rate"]) == (100, 1000.0)

    # the next cycle tries the other direction
    await shared.request_optimization()
    await tick(shared)
    assert await batch_size(shared) == 50
    newest = (await records(shared))[0]
    assert newest["record_id"] != applied["record_id"]
    assert newest["outcome"] == "applied"
    assert newest["details"]["upward"] is False


async def test_change_that_helps_is_kept(shared: SharedState) -> None:
    await setup(shared, BATCH_LOVING)
    await tick(shared)
    [applied] = await records(shared)
    assert applied["before"]["rows_per_s"] == 400.0
    assert await batch_size(shared) == 200
    await tick(shared)
    past_the_window(shared)
    await tick(shared)
    [judged] = await records(shared)
    assert judged["record_id"] == applied["record_id"]
    assert judged["outcome"] == "kept"
    assert judged["success"] is True
    assert judged["after"]["rows_per_s"] > judged["before"]["rows_per_s"]
    assert judged["details"]["gain"] >= 0.05
    assert await batch_size(shared) == 200
    assert (await agent_data(shared))["last_rate"] == 1000.0
    assert [r["record_id"] for r in
            await shared.get_recent_optimizations(success_only=True)] == [applied["record_id"]]


async def test_manual_cycle_runs_on_the_next_tick(shared: SharedState) -> None:
    await shared.update_config({"optimizer": {"enabled": True, "interval_s": 3600.0,
                                              "verify_s": VERIFY_S, "min_samples": 3}})
    await tick(shared)  # the first cycle: nothing to tune yet
    first = await cycle(shared)
    assert first is not None
    assert (first["changes"], first["manual"]) == (0, False)

    await shared.update_config({"agents": {"thr": {"class": THROUGHPUT, "interval_s": TINY,
                                                   "batch_size": 100}}})
    await tick(shared)  # the agent reports, but no cycle is due for an hour
    assert await cycle(shared) == first
    assert await records(shared) == []
    assert await batch_size(shared) == 100

    await shared.request_optimization()
    assert (await shared.get_system_state())["values"]["optimization_requested"] is True
    await tick(shared)
    manual = await cycle(shared)
    assert manual["at"] > first["at"]
    assert (manual["changes"], manual["manual"]) == (1, True)
    assert (await shared.get_system_state())["values"]["optimization_requested"] is False
    assert await batch_size(shared) == 200
    assert [r["outcome"] for r in await records(shared)] == ["applied"]

    await tick(shared)  # the request was consumed: no further cycle
    assert await cycle(shared) == manual


async def test_disabled_optimizer_changes_nothing(shared: SharedState) -> None:
    await setup(shared, THROUGHPUT)
    await shared.update_config({"optimizer": {"enabled": False}})
    await shared.request_optimization()
    await tick(shared)
    await tick(shared)
    assert await records(shared) == []
    assert await batch_size(shared) == 100
    assert await cycle(shared) is None
