"""How a write reaches the inbox: in call order, a burst in one group commit, a lone write on
SQLite committed in the call, and a locked file never holding the event loop.

The write methods validate and queue at the call and return a future (``state.api``), so one
handle's writes commit in the order they were called however they are awaited; on SQLite a
write with nothing queued before it commits in the call (``SharedState._commit_now``) on a
connection that does not wait for a lock (``state.backends.sqlite._Appender``).
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from state import SharedState
from state.api import NOW_PER_TURN
from state.backends.url import sqlite_path
from state.fold import KIND_ERROR, KIND_HEARTBEAT, KIND_INSIGHT, KIND_METRIC, KIND_REGISTER


def metric(i: int) -> dict:
    return {"source_agent": "w", "name": "n", "value": float(i)}


async def inbox_kinds(shared: SharedState) -> list[tuple[int, str]]:
    rows = await shared.backend.read_inbox(10_000)
    return [(r.seq, r.kind) for r in rows if r.stream == shared._stream]


async def test_writes_of_one_handle_commit_in_the_order_they_were_called(db_url: str) -> None:
    async with SharedState.open(db_url, producer="w") as shared:
        calls = []
        for i in range(60):  # every kind of write, all in flight at once
            match i % 5:
                case 0:
                    calls.append((shared.add_performance_metric(metric(i)), KIND_METRIC))
                case 1:
                    calls.append((shared.update_agent_heartbeat("a", {"i": i}), KIND_HEARTBEAT))
                case 2:
                    calls.append((shared.add_error_pattern("E", f"boom {i}", "a"), KIND_ERROR))
                case 3:
                    calls.append((shared.add_insight("t", {"i": i}, "a"), KIND_INSIGHT))
                case _:
                    calls.append((shared.register_agent(f"a{i}", kind="k"), KIND_REGISTER))
        results = await asyncio.gather(*(c for c, _ in calls))
        written = await inbox_kinds(shared)
        assert [kind for _, kind in written] == [kind for _, kind in calls]
        assert [seq for seq, _ in written] == list(range(1, 61))
        assert all(isinstance(r, str) and r for r, (_, k) in zip(results, calls, strict=True)
                   if k in ("error", KIND_INSIGHT))  # the ids, once committed


async def test_a_burst_is_one_group_commit_and_lone_writes_commit_in_the_call(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SharedState.open(sqlite_url, producer="w") as shared:
        await shared.add_performance_metric(metric(0))  # opens the stream (through the writer)
        sizes: list[int] = []
        direct: list[int] = []
        real, real_now = shared.backend.append, shared.backend.append_now

        async def append(stream: int, rows) -> None:
            sizes.append(len(rows))
            await real(stream, rows)

        def append_now(stream: int, rows) -> bool:
            done = real_now(stream, rows)
            if done:
                direct.append(len(rows))
            return done

        monkeypatch.setattr(shared.backend, "append", append)
        monkeypatch.setattr(shared.backend, "append_now", append_now)
        for i in range(1, 41):  # one await at a time, the loop turning between writes
            await shared.add_performance_metric(metric(i))
            await asyncio.sleep(0)
        assert sizes == [] and len(direct) == 40  # each committed in its own call
        direct.clear()
        for i in range(41, 81):  # one await at a time, in one turn of the loop
            await shared.add_performance_metric(metric(i))
        assert len(direct) + len(sizes) == 40 and len(sizes) <= 40 // NOW_PER_TURN
        sizes.clear()
        direct.clear()
        await asyncio.gather(*(shared.add_performance_metric(metric(i))
                               for i in range(81, 1081)))
        assert len(direct) <= NOW_PER_TURN  # the first of a burst, at most
        assert sum(sizes) + len(direct) == 1000 and len(sizes) <= 2  # the rest: group commit
        await shared.flush()
        [series] = (await shared.get_performance_summary(hours=1))["series"].values()
        assert series["count"] == 1081 and series["max"] == 1080.0


async def test_a_locked_file_does_not_hold_the_event_loop(sqlite_url: str) -> None:
    """Another connection holds the write lock: the write waits in the appender's thread
    (which waits for the lock), not on the loop, and commits once the lock is gone."""
    async with SharedState.open(sqlite_url, producer="w") as shared:
        await shared.add_performance_metric(metric(0))
        other = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            write = asyncio.ensure_future(shared.add_performance_metric(metric(1)))
            ticks = 0
            for _ in range(50):  # the loop keeps turning while the write waits
                await asyncio.sleep(0)
                ticks += 1
            assert ticks == 50 and not write.done()
            other.execute("ROLLBACK")
        finally:
            other.close()
        await asyncio.wait_for(write, timeout=60)
        assert [seq for seq, _ in await inbox_kinds(shared)] == [1, 2]


async def test_the_committed_sequence_outlives_the_fold_that_deletes_the_rows(
    db_url: str,
) -> None:
    """What a writer looks up after a lost reply: on SQLite the stream's newest inbox row,
    or the mark its rows were folded and deleted up to."""
    async with SharedState.open(db_url, producer="w") as shared:
        for i in range(10):
            await shared.add_performance_metric(metric(i))
        assert await shared.backend.committed_seq(shared._stream) == 10
        await shared.flush()
        assert await inbox_kinds(shared) == []
        assert await shared.backend.committed_seq(shared._stream) == 10
        await asyncio.gather(*(shared.add_performance_metric(metric(i)) for i in range(5)))
        assert await shared.backend.committed_seq(shared._stream) == 15
        await shared.flush()
        assert await shared.backend.committed_seq(shared._stream) == 15
