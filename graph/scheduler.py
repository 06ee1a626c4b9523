"""``bga run``: tick the system graph on an interval until SIGINT or SIGTERM.

One scheduler per database: the leader lock elects it; another ``bga run`` stands by and
takes over when the leader exits or dies (the OS releases its lock). A stop signal lets the
current tick finish, then exits cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable

from graph import runner
from state.api import SharedState
from state.backends import LockBusy
from state.queries import config_of

Notify = Callable[[str], None]


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


async def run(shared: SharedState, *, stop: asyncio.Event, notify: Notify = print,
              interval_s: float | None = None, max_ticks: int | None = None,
              on_tick: Callable[[runner.TickReport], Awaitable[None] | None] | None = None,
              ) -> int:
    """Tick until ``stop`` is set (or ``max_ticks``); returns the number of ticks run."""
    backend = shared.backend
    try:
        leader = backend.leader_lock(wait=0)
        await leader.__aenter__()
    except LockBusy:
        notify(f"another scheduler is running on {backend.url}; standing by to take over")
        leader = backend.leader_lock(wait=None)
        waiter = asyncio.ensure_future(leader.__aenter__())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            return 0
        stopper.cancel()
        notify("took over as the scheduler")
    ticks = 0
    try:
        while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
            started = time.monotonic()
            report = await runner.tick(shared, wait=None)
            ticks += 1
            if on_tick is not None:
                result = on_tick(report)
                if asyncio.iscoroutine(result):
                    await result
            every = interval_s or config_of(await shared.read()).ticker.interval_s
            await _sleep_until(stop, every - (time.monotonic() - started))
    finally:
        await leader.__aexit__(None, None, None)
    return ticks


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
