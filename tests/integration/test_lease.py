"""Leadership by lease (``state.backends.lease``): a holder that stops renewing loses its lock
to a standby, and learns it has lost it when it wakes; a holder that dies or lets go hands it
over at once. SQLite is driven by a fake clock; PostgreSQL by its own idle-session timer on a
short failover time (bounded waits, no timing asserted)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from graph import scheduler, worker
from state import SharedState
from state.backends import LockBusy, lease, make_backend
from tests.agents.example import ECHO
from tests.clock import FakeClock
from tests.integration.test_cli import (
    BgaProcess,
    Children,
    flat,
    metric_count,
    state_so_far,
)
from tests.integration.test_cluster import counter_of, series_count
from tests.integration.test_scheduler import MetricWriter, wait_until

WAIT_S = 60.0


async def test_sqlite_a_lease_that_is_not_renewed_is_taken_over(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(1_000_000.0)
    monkeypatch.setattr(lease, "wall", clock)
    monkeypatch.setattr(lease, "monotonic", clock)
    a, b, c = (make_backend(sqlite_url, failover_s=3) for _ in range(3))
    for backend in (a, b, c):
        await backend.setup()
    try:
        held_by_a = a.leader_lock(wait=0)
        await held_by_a.__aenter__()  # A holds the lease and the lock file's flock
        with pytest.raises(LockBusy):
            async with b.leader_lock(wait=0):
                pass
        clock.now += lease.lease_s(3) / 2  # not yet lapsed: still A's
        assert await a.holds("leader")
        with pytest.raises(LockBusy):
            async with b.leader_lock(wait=0):
                pass
        clock.now += lease.lease_s(3) + 0.1  # A stopped renewing (it was SIGSTOPped, say)
        async with b.leader_lock(wait=0):  # B takes it although A still has the flock
            assert await b.holds("leader")
            assert not await a.holds("leader")  # A wakes up: its token is no longer the row's
            await held_by_a.__aexit__(None, None, None)  # A stands down: its flock goes
            with pytest.raises(LockBusy):  # a free flock is no licence: B's lease is live
                async with c.leader_lock(wait=0):
                    pass
            assert await b.holds("leader")  # B's renewal picks the free flock up
            clock.now += lease.lease_s(3) / 2
            assert await b.holds("leader")
        # B let go: the flock is free beside a row that had it, so C takes it at once
        async with c.leader_lock(wait=0):
            assert await c.holds("leader")
    finally:
        for backend in (a, b, c):
            await backend.aclose()


async def test_sqlite_a_lease_outlives_a_clock_set_back_by_at_most_a_lease(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expiry further ahead than a lease can only come from a clock set back (or a row
    written before a reboot on another clock): it counts as lapsed, never as held forever."""
    clock = FakeClock(1_000_000.0)
    monkeypatch.setattr(lease, "wall", clock)
    a, b = make_backend(sqlite_url, failover_s=3), make_backend(sqlite_url, failover_s=3)
    await a.setup()
    await b.setup()
    try:
        async with a.fold_lock(wait=0):
            clock.now -= 10 * lease.lease_s(3)
            async with b.fold_lock(wait=0):
                assert await b.holds("fold")
    finally:
        await a.aclose()
        await b.aclose()


async def test_postgres_the_server_ends_a_stopped_holders_session(
    postgres_url: str
) -> None:
    """A holder whose renewals stop (a paused renewal here, as in a stopped process): the
    server ends its idle lock session after a lease, the lock goes with it, a standby takes it,
    and the holder, when it wakes, finds it lost."""
    a = make_backend(postgres_url, failover_s=1.5)
    b = make_backend(postgres_url, failover_s=1.5)
    await a.setup()
    await b.setup()
    resume = asyncio.Event()
    real_renew = a._renew

    async def paused(name: str) -> bool:
        await resume.wait()
        return await real_renew(name)

    a._renew = paused  # type: ignore[method-assign]
    try:
        async with a.leader_lock(wait=0):
            session = a._lock_conns["leader"].info.backend_pid  # type: ignore[attr-defined]
            async with b.leader_lock(wait=WAIT_S):  # after the server ended A's session
                assert await b.holds("leader")
                resume.set()
                assert not await a.holds("leader")
        async with b.leader_lock(wait=0):
            assert b._lock_conns["leader"].info.backend_pid != session  # type: ignore[attr-defined]
    finally:
        resume.set()
        await a.aclose()
        await b.aclose()


async def test_renewals_keep_a_long_held_lock(db_url: str) -> None:
    """A holder that keeps renewing keeps its lock well past one lease (here on a short
    failover time): the background renewal is what holds it, on every backend."""
    a = make_backend(db_url, failover_s=3)
    b = make_backend(db_url, failover_s=3)
    await a.setup()
    await b.setup()
    try:
        async with a.fold_lock(wait=0):
            for _ in range(2):
                await asyncio.sleep(lease.lease_s(3))
                with pytest.raises(LockBusy):
                    async with b.fold_lock(wait=0):
                        pass
            assert await a.holds("fold")
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_worker_rides_out_failed_writes_with_one_line(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step whose write fails (connection lost) is redone after a back-off; one line says
    so, one says it works again, and every recorded step counts once."""
    monkeypatch.setattr(scheduler, "BACKOFF_S", (0.01, 0.02))
    lines: list[str] = []
    async with SharedState.open(db_url, producer="tests") as shared:
        await shared.update_config({"agents": {"echo": {"class": ECHO, "interval_s": 0.01}}})
        real = shared.write_events
        failures = {"left": 3}

        async def flaky(batch):  # type: ignore[no-untyped-def]
            if failures["left"]:
                failures["left"] -= 1
                raise ConnectionError("server closed the connection unexpectedly")
            return await real(batch)

        monkeypatch.setattr(shared, "write_events", flaky)
        report = await worker.run(shared, ["echo"], stop=asyncio.Event(), notify=lines.append,
                                  max_steps=3)
        values = await shared.read()
    assert report.steps == {"echo": 3} and report.failures == 3
    assert counter_of(values, "echo") == 3 == series_count(values, "echo/ticks")
    trouble = [line for line in lines if "connection to the server lost" in line]
    assert len(trouble) == 1 and "step not recorded, will redo it" in trouble[0], lines
    assert sum("works again after 3 failed attempt(s)" in line for line in lines) == 1, lines


# -- Redis: SET NX PX with a fencing token -------------------------------------------------------


async def test_redis_a_holder_whose_connection_is_gone_is_taken_over_at_once(
        redis_url: str) -> None:
    """A killed holder's lock connection closes: a standby takes its lock although its lease
    has not lapsed (the holder's client id is gone), with a new token, and the old holder's
    renewal is refused (the fence)."""
    a = make_backend(redis_url, failover_s=600)  # a lease of 300 s: only the takeover frees it
    b = make_backend(redis_url, failover_s=600)
    await a.setup()
    await b.setup()
    try:
        assert await a._acquire("leader", 0)
        old = a._held["leader"]  # type: ignore[attr-defined]
        with pytest.raises(LockBusy):  # alive: busy
            async with b.leader_lock(wait=0):
                pass
        await a._locks.aclose()  # type: ignore[attr-defined]  # as a SIGKILL would
        async with b.leader_lock(wait=WAIT_S):
            new = b._held["leader"]  # type: ignore[attr-defined]
            assert int(new.split(":")[1]) == int(old.split(":")[1]) + 1  # the token moved on
            a._locks = None  # type: ignore[attr-defined]
            await a._lock_client()  # type: ignore[attr-defined]
            assert not await a._renew("leader")  # the stale holder is fenced off
            assert await b.holds("leader")
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_a_lease_that_is_not_renewed_lapses_and_is_taken_over(
        redis_url: str) -> None:
    """A holder that is alive but stops renewing (SIGSTOP) loses its lock once the key's
    PX expires; when it wakes its renewal fails and ``holds`` says so."""
    a = make_backend(redis_url, failover_s=1)  # a lease of 0.5 s
    b = make_backend(redis_url, failover_s=1)
    await a.setup()
    await b.setup()
    try:
        assert await a._acquire("fold", 0)
        async with b.fold_lock(wait=WAIT_S):  # bounded wait: taken once the lease lapsed
            assert not await a._renew("fold")
        assert not await a._renew("fold")
    finally:
        await a.aclose()
        await b.aclose()


# -- a stopped leader, in processes: SQLite file, PostgreSQL and Redis --------------------------


def _tick_of(url: str) -> tuple[int | None, int]:
    tick = state_so_far(url).get("tick") or {}
    return (tick.get("coordinator") or {}).get("pid"), int(tick.get("n", 0))


@pytest.mark.slow
def test_a_stopped_leader_is_replaced_and_stands_down_when_it_wakes(
    children: Children, shared_db_url: str, tmp_path: Path
) -> None:
    """Three ``bga run --coordinator-only --failover-s 3`` and a producer. SIGSTOP the leader
    between two ticks: a standby's ticks follow; SIGCONT it: it says it lost the lock and
    stands by; at the end every acknowledged metric is counted exactly once."""
    url = shared_db_url
    args = ("run", "--db", url, "--interval", "0.5", "--coordinator-only", "--failover-s", "3")
    writer = MetricWriter(url, tmp_path)
    coordinators: dict[int, BgaProcess] = {}
    stopped: BgaProcess | None = None
    try:
        for i in range(3):
            c = children.start(f"coordinator{i}", *args)
            coordinators[c.pid] = c
        wait_until(lambda: _tick_of(url)[0] in coordinators, "a leader ticking",
                   *coordinators.values())
        leader = coordinators[_tick_of(url)[0]]  # type: ignore[index]
        lines = leader.tick_lines()
        wait_until(lambda: leader.tick_lines() > lines, "a tick just done", leader)
        leader.proc.send_signal(signal.SIGSTOP)  # between ticks: not inside a write
        stopped = leader
        at_stop = _tick_of(url)[1]
        others = [c for c in coordinators.values() if c is not leader]
        wait_until(lambda: _tick_of(url)[0] in {c.pid for c in others}
                   and _tick_of(url)[1] >= at_stop + 2, "ticks by a standby", *others)
        leader.proc.send_signal(signal.SIGCONT)
        stopped = None
        leader.wait_for("lost the scheduler lock", timeout=WAIT_S)
        at_wake = _tick_of(url)[1]
        wait_until(lambda: _tick_of(url)[1] >= at_wake + 2, "ticks after the wake-up",
                   *coordinators.values())
        assert _tick_of(url)[0] != leader.pid
        acknowledged = writer.stop()
        for c in coordinators.values():
            c.wait_for("scheduler running on")
            c.proc.send_signal(signal.SIGTERM)
        for c in coordinators.values():
            assert c.wait_exit(30) == 0, c.describe()
    finally:
        if stopped is not None:
            stopped.proc.send_signal(signal.SIGCONT)
        writer.kill()

    async def flush() -> None:
        async with SharedState.open(url, producer="tests") as shared:
            await shared.flush(wait=WAIT_S)

    asyncio.run(flush())
    assert metric_count(url, "crash/w") == acknowledged > 0
    assert "standing by" in flat(leader.output())
