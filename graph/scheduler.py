"""``bga run``: tick the system graph on an interval until SIGINT or SIGTERM.

One scheduler per database: the leader lock elects it; other ``bga run`` processes (on any
host, with PostgreSQL) stand by and one takes over when the leader exits, dies, hangs or loses
its host: the lock is a lease the leader renews (``state.backends.lease``), released at once
with a dead process and lapsing within the failover time when renewals stop.
A stop signal lets the current tick finish, then exits cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from graph import runner
from state.api import SharedState
from state.backends import LockBusy, StaleCheckpoint, describe_trouble
from state.queries import config_of

Notify = Callable[[str], None]
BACKOFF_S = (0.5, 30.0)  # first and longest wait after database trouble


class Backoff:
    """Doubling waits after trouble, reset by a success. Says what went wrong in one line
    (``describe_trouble``) when the trouble starts or changes, not on every retry, and one
    line when things work again."""

    def __init__(self, notify: Notify, where: str) -> None:
        self.notify, self.where = notify, where
        self.delay = BACKOFF_S[0]
        self.failures = 0
        self._said: str | None = None

    async def trouble(self, exc: BaseException, stop: asyncio.Event, doing: str) -> None:
        line = f"{doing}: {describe_trouble(exc, self.where)}"
        if line != self._said:
            self._said = line
            self.notify(f"{line}; retrying in {self.delay:g} s, backing off to "
                        f"{BACKOFF_S[1]:g} s")
        self.failures += 1
        await _sleep_until(stop, self.delay)
        self.delay = min(self.delay * 2, BACKOFF_S[1])

    def ok(self) -> None:
        if self.failures:
            self.notify(f"database at {self.where} works again after {self.failures} "
                        "failed attempt(s)")
        self.delay = BACKOFF_S[0]
        self.failures = 0
        self._said = None


async def _sleep_until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


async def hold_or_stand_by(make_lock: Callable[[float | None], AbstractAsyncContextManager],
                           stop: asyncio.Event, notify: Notify, busy: str, took: str
                           ) -> AbstractAsyncContextManager | None:
    """Enter a lock now, or say ``busy`` and wait for it until ``stop`` (then None); says
    ``took`` when it comes free. The caller exits the returned context manager."""
    lock = make_lock(0)
    try:
        await lock.__aenter__()
        return lock
    except LockBusy:
        notify(busy)
    lock = make_lock(None)
    waiter = asyncio.ensure_future(lock.__aenter__())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not waiter.done():
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        return None
    stopper.cancel()
    waiter.result()
    notify(took)
    return lock


async def compete(make_lock: Callable[[float | None], AbstractAsyncContextManager],
                  stop: asyncio.Event, notify: Notify, backoff: Backoff, busy: str, took: str,
                  doing: str) -> AbstractAsyncContextManager | None:
    """``hold_or_stand_by`` until the lock is held (returned) or ``stop`` (None): database
    trouble while competing (server down, lock file unwritable) is one line, a back-off and
    another try. The one leadership loop of the scheduler and the alert sender."""
    while not stop.is_set():
        try:
            return await hold_or_stand_by(make_lock, stop, notify, busy, took)
        except Exception as exc:
            await backoff.trouble(exc, stop, doing)
    return None


async def run(shared: SharedState, *, stop: asyncio.Event, notify: Notify = print,
              interval_s: float | None = None, max_ticks: int | None = None,
              on_tick: Callable[[runner.TickReport], Awaitable[None] | None] | None = None,
              coordinator_only: bool = False) -> int:
    """Tick until ``stop`` is set (or ``max_ticks``); returns the number of ticks run.

    The leader lock is a lease (``state.backends.lease``): before every tick the leader renews
    it, and a leader whose lease lapsed (it could not renew within the lease: it was stopped,
    its network was cut), was taken over or went with its database session (server restart)
    stops ticking and stands by again: by then another scheduler may lead. Database trouble
    (a failed tick or lock attempt) is one line, a back-off, and another try. After each tick
    (and ``on_tick``) the garbage collector's upkeep runs (``runner.settle_gc``: the first
    one freezes the warm heap), then the scheduler sleeps until the next tick is due."""
    backend = shared.backend
    ticks = 0
    backoff = Backoff(notify, backend.where)
    while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
        leader = await compete(
            lambda wait: backend.leader_lock(wait=wait), stop, notify, backoff,
            f"another scheduler is running on {backend.where}; standing by to take over",
            "took over as the scheduler", "cannot compete for the scheduler lock")
        if leader is None:
            break
        try:
            while not stop.is_set() and (max_ticks is None or ticks < max_ticks):
                try:
                    if not await backend.holds("leader"):
                        notify("lost the scheduler lock (its lease lapsed, was taken over, or "
                               "went with its database session); standing by")
                        break
                    started = time.monotonic()
                    report = await runner.tick(shared, wait=None,
                                               coordinator_only=coordinator_only)
                except StaleCheckpoint:
                    # a dead leader's last commit can land just after its locks went: the
                    # checkpoint refused this tick, nothing was written; tick again from it
                    notify("tick refused: the state moved on under it; ticking again")
                    continue
                except Exception as exc:  # database trouble: stand down, back off, compete
                    await backoff.trouble(exc, stop, "tick failed; standing down")
                    break
                backoff.ok()
                ticks += 1
                if on_tick is not None:
                    result = on_tick(report)
                    if asyncio.iscoroutine(result):
                        await result
                runner.settle_gc()  # the idle gap before the next tick
                try:
                    every = interval_s or config_of(await shared.read()).ticker.interval_s
                except Exception as exc:
                    await backoff.trouble(exc, stop, "cannot read the tick interval")
                    continue
                await _sleep_until(stop, every - (time.monotonic() - started))
        finally:
            with contextlib.suppress(Exception):  # its session may be gone already
                await leader.__aexit__(None, None, None)
    return ticks


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
