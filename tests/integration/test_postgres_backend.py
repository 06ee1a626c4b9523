"""What the PostgreSQL backend adds under the shared interface: compare-and-swap checkpoints,
advisory locks that die with their process, migrations raced by several processes, pruning."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import psycopg
import pytest
from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint

from graph import scheduler
from state import SharedState
from state.backends import LockBusy, StaleCheckpoint, make_backend
from state.backends.migrations import STATE
from state.schema import SYSTEM_THREAD, thread_uuid
from tests.integration.workers import ROOT

pytestmark = pytest.mark.postgres

THREAD = thread_uuid(SYSTEM_THREAD)  # compare-and-swap guards the shared state's thread


def config(parent: str | None) -> dict:
    conf = {"thread_id": THREAD, "checkpoint_ns": ""}
    if parent is not None:
        conf["checkpoint_id"] = parent
    return {"configurable": conf}


async def test_checkpoint_written_from_a_stale_parent_is_refused(postgres_url: str) -> None:
    backend = make_backend(postgres_url)
    await backend.setup()
    try:
        saver = backend.checkpointer
        first = create_checkpoint(empty_checkpoint(), None, 1)
        first["channel_values"] = {"big": {"a": [1, 2, 3]}, "n": 1}
        first["channel_versions"] = {"big": saver.get_next_version(None, None),
                                     "n": saver.get_next_version(None, None)}
        cfg = await saver.aput(config(None), first, {"step": 1}, first["channel_versions"])
        assert await backend.latest_checkpoint_id(THREAD) == first["id"]
        second = create_checkpoint(first, None, 2)
        await saver.aput(cfg, second, {"step": 2}, {})
        third = create_checkpoint(first, None, 3)
        with pytest.raises(StaleCheckpoint):
            await saver.aput(cfg, third, {"step": 3}, {})  # parent is no longer the newest
        assert await backend.latest_checkpoint_id(THREAD) == second["id"]
        found = await saver.aget_tuple({"configurable": {"thread_id": THREAD,
                                                         "checkpoint_ns": ""}})
        assert found.checkpoint["id"] == second["id"]
        assert found.checkpoint["channel_values"]["big"] == {"a": [1, 2, 3]}  # from blobs
    finally:
        await backend.aclose()


async def test_locks_exclude_each_other_and_are_released(postgres_url: str) -> None:
    a, b = make_backend(postgres_url), make_backend(postgres_url)
    await a.setup()
    await b.setup()
    try:
        async with a.fold_lock(wait=0):
            with pytest.raises(LockBusy):
                async with b.fold_lock(wait=0.2):
                    pass
            async with b.leader_lock(wait=0):  # another lock name is independent
                pass
        async with b.fold_lock(wait=0):
            pass
    finally:
        await a.aclose()
        await b.aclose()


HOLD_LOCK = """
import asyncio, sys, time
from state.backends import make_backend

async def main():
    backend = make_backend(sys.argv[1])
    await backend.setup()
    await backend._acquire("leader", 0)
    print("HELD", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_lock_of_a_killed_process_is_released_by_the_server(postgres_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, postgres_url], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "HELD"
        backend = make_backend(postgres_url)
        await backend.setup()
        try:
            with pytest.raises(LockBusy):
                async with backend.leader_lock(wait=0.2):
                    pass
            proc.kill()
            proc.wait(30)
            started = time.monotonic()
            async with backend.leader_lock(wait=15):
                taken = time.monotonic() - started
            assert taken < 15
        finally:
            await backend.aclose()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


SETUP = """
import asyncio, sys, time
import state.backends.postgres
from state.backends import make_backend

async def main():
    backend = make_backend(sys.argv[1])
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start at once
    await backend.setup()
    await backend.aclose()

asyncio.run(main())
"""


async def test_schema_setup_raced_by_several_processes(postgres_url: str) -> None:
    start = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", SETUP, postgres_url, start], cwd=ROOT,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    for proc in procs:
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err
    with psycopg.connect(postgres_url) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM bga_migrations "
                                               "ORDER BY version")]
        assert versions == list(range(1, STATE.latest("postgres") + 1))
        (saver_versions,) = conn.execute("SELECT count(*) FROM checkpoint_migrations").fetchone()
        assert saver_versions > 0


async def test_read_only_open_refuses_a_missing_database(postgres_url: str) -> None:
    with pytest.raises(ValueError, match="no state database"):
        async with SharedState.open(postgres_url, must_exist=True):
            pass


async def test_pruning_keeps_the_newest_checkpoints_and_their_blobs(postgres_url: str) -> None:
    async with SharedState.open(postgres_url, producer="p") as shared:
        for i in range(6):
            await shared.add_performance_metric({"source_agent": "w", "name": "m",
                                                 "value": float(i)})
            await shared.flush()
        before = await shared.read()
        backend = shared.backend
        for keep in (3, 1):
            await backend.prune_checkpoints(shared.thread_id, keep)
            with psycopg.connect(postgres_url) as conn:
                (n,) = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id=%s "
                                    "AND checkpoint_ns=''", (shared.thread_id,)).fetchone()
            assert n == keep
        with psycopg.connect(postgres_url) as conn:
            (orphans,) = conn.execute(
                "SELECT count(*) FROM checkpoint_blobs b WHERE NOT EXISTS (SELECT 1 FROM "
                "checkpoints c WHERE c.thread_id=b.thread_id AND c.checkpoint_ns="
                "b.checkpoint_ns AND c.checkpoint->'channel_versions'->>b.channel=b.version)"
            ).fetchone()
            assert orphans == 0
        assert await backend.prune_checkpoints(shared.thread_id, 1) == 0
        after = await shared.read()  # the kept checkpoint still loads whole
        assert (after["metrics"], after["stats"]) == (before["metrics"], before["stats"])


async def test_lock_sessions_carry_keepalives_bounded_by_the_failover_time(postgres_url: str
                                                                           ) -> None:
    """A dead host cannot close its socket: TCP keepalives make the server drop its lock
    session, and with it the leader lock, within the configured failover time."""
    backend = make_backend(postgres_url, failover_s=9)
    await backend.setup()
    try:
        async with backend.leader_lock(wait=0):
            params = backend._lock_conns["leader"].info.get_parameters()
            idle, interval, count = (int(params[k]) for k in (
                "keepalives_idle", "keepalives_interval", "keepalives_count"))
            assert params["keepalives"] == "1"
            assert idle + interval * count <= 9
            assert int(params["tcp_user_timeout"]) <= 9_000
    finally:
        await backend.aclose()
    with pytest.raises(ValueError, match="failover time"):
        make_backend(postgres_url, failover_s=0.1)


async def test_a_leader_whose_lock_session_is_cut_stands_by_then_leads_again(
    postgres_url: str
) -> None:
    """The server ends the leader's lock session (as keepalives do when its host vanishes):
    the scheduler notices before its next tick and stops ticking as leader; since nobody else
    holds the lock it takes it again, on a new session, and goes on ticking."""
    notes: list[str] = []
    async with SharedState.open(postgres_url, producer="tests") as shared:
        stop = asyncio.Event()
        task = asyncio.create_task(scheduler.run(shared, stop=stop, notify=notes.append,
                                                 interval_s=0.05))
        try:
            async def ticks() -> int:
                return int((await shared.read()).get("stats", {}).get("ticks", 0))

            deadline = time.monotonic() + 60
            while await ticks() < 2:
                assert time.monotonic() < deadline and not task.done(), notes
                await asyncio.sleep(0.05)
            pid = shared.backend._lock_conns["leader"].info.backend_pid
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            while not any("lost the scheduler lock" in n for n in notes):
                assert time.monotonic() < deadline and not task.done(), notes
                await asyncio.sleep(0.05)
            resumed = await ticks()
            while await ticks() < resumed + 2:
                assert time.monotonic() < deadline and not task.done(), notes
                await asyncio.sleep(0.05)
            assert shared.backend._lock_conns["leader"].info.backend_pid != pid
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
