"""How a write reaches the inbox: in call order, a burst in one group commit, a lone write on
SQLite committed in the call, and a locked file never holding the event loop.

The write methods validate and queue at the call and return a future (``state.api``), so one
handle's writes commit in the order they were called however they are awaited; on SQLite a
write with nothing queued before it commits in the call (``SharedState._commit_now``) on a
connection that does not wait for a lock (``state.backends.sqlite._Appender``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable

import pytest

from state import SharedState
from state.api import NOW_PER_TURN
from state.backends import sqlite as sqlite_backend
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
        for i in range(41, 81):  # one await at a time, never giving the loop a turn
            await shared.add_performance_metric(metric(i))
        assert sizes == [] and len(direct) == 40  # awaiting each is what makes them lone
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


async def until(done: Callable[[], bool], what: str) -> None:
    """Wait (turning the loop) for the appender's thread to have done ``what``."""
    for _ in range(3000):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the appender's thread never {what}")


async def write_one_at_a_time(shared: SharedState, rounds: int, start: int = 0) -> int:
    """``rounds`` times ``INLINE_CHECKPOINT_EVERY`` writes, each awaited, and after each round
    the passive checkpoint it asked for; the checkpoints the thread ran."""
    appender = shared.backend._appender
    assert appender is not None
    i = start
    for _ in range(rounds):
        asked = appender.checkpoints + appender.checkpoints_failed
        for _ in range(sqlite_backend.INLINE_CHECKPOINT_EVERY):
            await shared.add_performance_metric(metric(i))
            i += 1
        await until(lambda asked=asked: appender.checkpoints + appender.checkpoints_failed > asked,
                    "ran the checkpoint it was asked for")
    return appender.checkpoints


def wal_bytes(url: str) -> int:
    path = sqlite_path(url)
    return path.with_name(path.name + "-wal").stat().st_size


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint every 100 inline commits; a WAL over 300 frames is started again."""
    monkeypatch.setattr(sqlite_backend, "INLINE_CHECKPOINT_EVERY", 100)
    monkeypatch.setattr(sqlite_backend, "WAL_RESTART_FRAMES", 300)


@pytest.mark.usefixtures("small_wal")
async def test_the_wal_stays_bounded_however_long_one_await_at_a_time_goes_on(
    sqlite_url: str,
) -> None:
    """Inline commits never checkpoint; the thread checkpoints after every 100 of them. A
    checkpoint either copies all of the WAL (then the next write starts it again) or, raced
    by writes, finds it over the limit: then the next append goes to the thread, which
    checkpoints with nothing racing it (``test_a_reader_holding_the_wal...`` makes that
    happen every time). Either way the WAL stays bounded."""
    async with SharedState.open(sqlite_url, producer="w") as shared:
        await shared.add_performance_metric(metric(0))
        appender = shared.backend._appender
        assert appender is not None
        await write_one_at_a_time(shared, 30, start=1)
        assert appender.checkpoints >= 30
        assert appender.inline_commits >= 3000 - appender.restarts  # the rest: inline
        # a commit writes at least one frame (a page and a 24-byte header): 3,000 of them in
        # a WAL never started again take 3,000 frames; a restart comes at most two rounds
        # (of about 1.3 frames a commit) after a checkpoint found the WAL over the limit
        with sqlite3.connect(sqlite_path(sqlite_url)) as conn:
            [(page,)] = conn.execute("PRAGMA page_size").fetchall()
        bound = (sqlite_backend.WAL_RESTART_FRAMES
                 + 3 * 2 * sqlite_backend.INLINE_CHECKPOINT_EVERY) * (page + 24)
        assert wal_bytes(sqlite_url) < bound < 3000 * (page + 24)
        await shared.flush()
        [series] = (await shared.get_performance_summary(hours=1))["series"].values()
        assert series["count"] == 3001 and series["max"] == 3000.0


@pytest.mark.usefixtures("small_wal")
async def test_a_reader_holding_the_wal_delays_its_restart_and_no_write(sqlite_url: str) -> None:
    """A reader with an open snapshot keeps the checkpoint from copying past it: the WAL
    grows while it reads, every write still commits, and once it is gone the WAL is
    started again."""
    async with SharedState.open(sqlite_url, producer="w") as shared:
        await shared.add_performance_metric(metric(0))
        appender = shared.backend._appender
        assert appender is not None
        reader = sqlite3.connect(sqlite_path(sqlite_url), isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM bga_inbox").fetchone()  # holds its snapshot
            await write_one_at_a_time(shared, 10, start=1)
            held = wal_bytes(sqlite_url)
            reader.execute("COMMIT")
        finally:
            reader.close()
        restarts = appender.restarts
        await write_one_at_a_time(shared, 10, start=1001)
        assert appender.restarts > restarts
        after = wal_bytes(sqlite_url)
        await write_one_at_a_time(shared, 10, start=2001)
        assert wal_bytes(sqlite_url) == after  # reused from its start, no longer growing
        assert after < held + 100_000  # the frames written until the first restart, at most
        await shared.flush()
        [series] = (await shared.get_performance_summary(hours=1))["series"].values()
        assert series["count"] == 3001


@pytest.mark.usefixtures("small_wal")
async def test_a_failing_checkpoint_is_one_log_line_and_the_writes_go_on(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    real = sqlite_backend._passive_checkpoint
    failures = [sqlite3.OperationalError("disk I/O error")] * 3  # the first three

    def flaky(conn: sqlite3.Connection) -> int:
        if failures:
            raise failures.pop()
        return real(conn)

    monkeypatch.setattr(sqlite_backend, "_passive_checkpoint", flaky)
    caplog.set_level(logging.INFO, logger=sqlite_backend.__name__)
    async with SharedState.open(sqlite_url, producer="w") as shared:
        await shared.add_performance_metric(metric(0))
        appender = shared.backend._appender
        assert appender is not None
        await write_one_at_a_time(shared, 5, start=1)
        assert appender.checkpoints_failed == 3 and appender.checkpoints >= 2
        await shared.flush()
        [series] = (await shared.get_performance_summary(hours=1))["series"].values()
        assert series["count"] == 501
    said = [r.getMessage() for r in caplog.records if r.name == sqlite_backend.__name__]
    assert [m for m in said if "failed" in m] == [
        f"WAL checkpoint of {sqlite_path(sqlite_url)} failed (disk I/O error); appends go on, "
        "the WAL grows until one works"]
    assert [m for m in said if "works again" in m] == [
        f"WAL checkpoint of {sqlite_path(sqlite_url)} works again"]


async def test_a_queued_write_leaves_only_its_future_for_the_cyclic_gc(sqlite_url: str) -> None:
    """With 1,000 calls in flight, what each queued call keeps alive until its commit is what
    the cyclic GC walks and promotes to the old generation (each full collection then walks
    the whole heap): its future, and nothing more of ours (its items are a tuple of str and
    bytes, which the collector stops tracking)."""
    import gc

    async with SharedState.open(sqlite_url, producer="w") as shared:
        await shared.add_performance_metric(metric(0))
        gc.collect()
        before = {id(o) for o in gc.get_objects()}
        futures = [shared.add_performance_metric(metric(i)) for i in range(1, 1001)]
        gc.collect()
        gc.collect()  # a tuple of tuples is untracked once its inner ones are
        kept = [o for o in gc.get_objects() if id(o) not in before
                and not isinstance(o, asyncio.Future) and o is not futures]
        assert len(shared._queue) >= 1000 - NOW_PER_TURN  # the rest committed in the call
        assert len(kept) < 50, sorted({type(o).__name__ for o in kept})
        await asyncio.gather(*futures)
        assert [seq for seq, _ in await inbox_kinds(shared)] == list(range(1, 1002))
