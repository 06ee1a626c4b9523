"""The scheduler's garbage-collector upkeep between ticks (``graph.runner.settle_gc``): the
first one collects and then freezes the warm heap, reads keep that freeze, and reference cycles
that ticks leave behind are still collected."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from graph import runner, scheduler
from nodes.base import Agent, AgentContext
from state import SharedState, checkpoints
from state.checkpoints import gc_paused, thaw_heap
from tests.clock import FakeClock

CYCLING = f"{__name__}:CyclingAgent"


class Loop:
    """An object that refers to itself: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


held: list[Loop] = []  # the cycles of the running tick, dropped when it ends (``on_tick``)
made: list[tuple[bool, weakref.ref[Loop]]] = []  # (heap frozen when made, the cycle)


class CyclingAgent(Agent):
    """Makes one reference cycle per run and reports ``<id>/ticks = 1``."""

    kind = "cycling"

    async def step(self, ctx: AgentContext) -> None:
        loop = Loop()
        held.append(loop)
        made.append((checkpoints.heap_frozen, weakref.ref(loop)))
        ctx.metric("ticks", 1)


@pytest.fixture
def fresh_heap() -> Iterator[None]:
    """This test process as a fresh scheduler process: nothing frozen before or after."""
    thaw_heap()
    held.clear()
    made.clear()
    yield
    thaw_heap()
    held.clear()
    made.clear()


async def test_the_first_upkeep_freezes_the_heap_and_cycles_made_by_ticks_are_collected(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, fresh_heap: None
) -> None:
    monkeypatch.setenv("BGA_AGENT_CLASSES", CYCLING)
    clock = FakeClock()
    frozen_after: list[bool] = []

    def tick_done(report: runner.TickReport) -> None:
        held.clear()  # the tick's cycles are garbage now, just before the upkeep
        frozen_after.append(checkpoints.heap_frozen)
        clock.advance(1.0)  # the agent is due again at the next tick

    async with SharedState.open(sqlite_url, producer="scheduler", clock=clock) as shared:
        await shared.update_config({
            "ticker": {"interval_s": 0.01},  # the scheduler reads it between ticks (a read)
            "agents": {"cycler": {"class": CYCLING, "interval_s": 1.0}}})
        assert await scheduler.run(shared, stop=asyncio.Event(), notify=lambda line: None,
                                   max_ticks=4, on_tick=tick_done) == 4
        # the reads between ticks (state.checkpoints.gc_paused) kept the freeze
        assert gc.get_freeze_count() > 0
    assert frozen_after == [False, True, True, True]  # the first tick's upkeep froze it
    assert gc.isenabled()
    before = [ref for frozen, ref in made if not frozen]
    after = [ref for frozen, ref in made if frozen]
    assert before and after, made
    # the cycles of the first tick were garbage when the upkeep froze the heap: it collected
    # them first instead of freezing them for good
    assert all(ref() is None for ref in before)
    gc.collect()
    assert all(ref() is None for ref in after)  # nothing made after the freeze was frozen


def test_a_paused_collector_keeps_a_frozen_heap_frozen(fresh_heap: None) -> None:
    assert checkpoints.freeze_heap() is True
    assert checkpoints.freeze_heap() is False  # once per process
    frozen = gc.get_freeze_count()
    with gc_paused():
        assert not gc.isenabled()
        loop = weakref.ref(Loop())  # garbage made while paused is not frozen by the pause
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen  # the pause froze nothing more, thawed nothing
    gc.collect()
    assert loop() is None
