"""Example agents for the tests: each is one class, wired in by one config line.

Adding an agent needs no graph change: configure it through the shared config, e.g.
``{"agents": {"echo": {"class": "tests.agents.example:EchoAgent", "interval_s": 1}}}``, and the
next tick registers and runs it.
"""

from __future__ import annotations

import asyncio

from nodes.base import Agent, AgentContext, AgentSettings

ECHO = "tests.agents.example:EchoAgent"
FAILING = "tests.agents.example:FailingAgent"
SLOW = "tests.agents.example:SlowAgent"
THROUGHPUT = "tests.agents.example:ThroughputAgent"
BATCH_LOVING = "tests.agents.example:BatchLovingAgent"


class EchoAgent(Agent):
    """Reports ``<id>/ticks = 1`` and counts its runs in its persistent data."""

    kind = "echo"

    async def step(self, ctx: AgentContext) -> None:
        ctx.metric("ticks", 1)
        ctx.set_data(counter=int(ctx.data.get("counter", 0)) + 1)


class FailingAgent(Agent):
    """Raises ``RuntimeError("boom 42")`` on its first run, ``boom 43`` on the next, ...

    The number changes from run to run, so every failure has a different message that must
    still group into one error pattern.
    """

    kind = "failing"

    async def step(self, ctx: AgentContext) -> None:
        failures = int(ctx.data.get("failures", 0)) + 1
        ctx.set_data(failures=failures)
        raise RuntimeError(f"boom {41 + failures}")


class SlowSettings(AgentSettings):
    sleep_s: float = 30.0


class SlowAgent(Agent):
    """Sleeps far longer than any test budget; records ``finished`` if it ever wakes up."""

    kind = "slow"
    Settings = SlowSettings

    async def step(self, ctx: AgentContext) -> None:
        ctx.set_data(started=True)
        await asyncio.sleep(self.settings.sleep_s)
        ctx.set_data(finished=True)
        ctx.metric("woke_up", 1)


class ThroughputSettings(AgentSettings):
    batch_size: int = 100
    threshold: int = 100
    samples: int = 5


class ThroughputAgent(Agent):
    """Reports ``rows_per_s``: 1000 up to ``threshold`` rows per batch, 400 above it.

    Bigger batches make it slower, so the optimizer's first move (doubling ``batch_size``)
    makes things worse and must be rolled back.
    """

    kind = "throughput"
    Settings = ThroughputSettings
    SMALL_BATCH_RATE = 1000.0
    BIG_BATCH_RATE = 400.0

    def rate(self) -> float:
        small = self.settings.batch_size <= self.settings.threshold
        return self.SMALL_BATCH_RATE if small else self.BIG_BATCH_RATE

    async def step(self, ctx: AgentContext) -> None:
        rate = self.rate()
        for _ in range(self.settings.samples):
            ctx.metric("rows_per_s", rate)
        ctx.set_data(last_batch_size=self.settings.batch_size, last_rate=rate)


class BatchLovingAgent(ThroughputAgent):
    """The variant whose throughput improves with bigger batches (400 -> 1000 rows/s)."""

    kind = "batch_loving"
    SMALL_BATCH_RATE = 400.0
    BIG_BATCH_RATE = 1000.0
