"""SharedState.read keeps what it read: the decoded checkpoint by id, the overlay by inbox heads.

Invalidation: a new checkpoint is loaded again; a write from any handle moves a stream's head
and is read (read-your-writes), and only the rows since are read; the same checkpoint and
heads merge nothing again. Results equal a fresh handle's read of the same database.
"""

from __future__ import annotations

import pytest

import state.api
from state import PerformanceMetric, SharedState, queries
from state.backends import tree
from tests.clock import FakeClock


def metric(name: str, value: float, agent: str = "svc") -> PerformanceMetric:
    return PerformanceMetric(source_agent=agent, name=name, value=value, unit="ms")


class Counting:
    """Counts checkpoint loads and inbox rows read by ``SharedState.read``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, reader: SharedState) -> None:
        self.loads = 0
        self.rows = 0
        load, read_inbox = state.api.load_values, reader.backend.read_inbox

        async def counted_load(*args, **kwargs):
            self.loads += 1
            return await load(*args, **kwargs)

        async def counted_read_inbox(*args, **kwargs):
            rows = await read_inbox(*args, **kwargs)
            self.rows += len(rows)
            return rows

        monkeypatch.setattr(state.api, "load_values", counted_load)
        monkeypatch.setattr(reader.backend, "read_inbox", counted_read_inbox)


async def fresh_summary(url: str, hours: float, now: float) -> dict:
    queries.forget()
    async with SharedState.open(url, producer="fresh", read_only=True) as fresh:
        return queries.performance_summary(await fresh.read(), hours, now)


async def test_same_checkpoint_and_inbox_merge_nothing_again(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if db_url.startswith("memory://"):
        pytest.skip("a memory database is private to its handle")
    clock = FakeClock()
    async with SharedState.open(db_url, producer="writer", clock=clock) as writer, \
            SharedState.open(db_url, producer="reader", read_only=True,
                             clock=clock) as reader:
        await writer.add_performance_metrics([metric("lat", float(v)) for v in range(1, 101)])
        await writer.flush()
        await writer.add_performance_metrics([metric("lat", 500.0), metric("lat", 0.0)])
        counting = Counting(monkeypatch, reader)
        first = await reader.read()
        assert counting.loads == 1 and counting.rows == 2
        again = await reader.read()
        assert again is first  # nothing loaded, read or merged again
        assert counting.loads == 1 and counting.rows == 2
        summary = await reader.get_performance_summary(hours=1)
        assert summary["series"]["svc/lat"]["count"] == 102
        assert summary["series"]["svc/lat"]["min"] == 0.0

        # a write from another handle: read at once, only its row read, no checkpoint loaded
        await writer.add_performance_metric(metric("lat", 9000.0))
        summary = await reader.get_performance_summary(hours=1)
        assert summary["series"]["svc/lat"]["count"] == 103
        assert summary["series"]["svc/lat"]["max"] == 9000.0
        assert counting.loads == 1 and counting.rows == 3
        assert reader.pending == 3

        # a new checkpoint: loaded again, the overlay laid over the old one dropped
        await writer.flush()
        summary = await reader.get_performance_summary(hours=1)
        assert counting.loads == 2 and reader.pending == 0
        assert summary["series"]["svc/lat"]["count"] == 103
        assert summary == await fresh_summary(db_url, 1, clock())


async def test_incremental_overlay_equals_a_fresh_read(db_url: str) -> None:
    """Two writers, reads between their writes and a fold, a late row in an old bucket:
    every read equals a fresh handle's (integer values: every float sum is exact in any
    order, so the whole summary compares equal)."""
    if db_url.startswith("memory://"):
        pytest.skip("a memory database is private to its handle")
    clock = FakeClock()
    async with SharedState.open(db_url, producer="a", clock=clock) as a, \
            SharedState.open(db_url, producer="b", clock=clock) as b, \
            SharedState.open(db_url, producer="reader", read_only=True,
                             clock=clock) as reader:
        for round_ in range(6):
            await a.add_performance_metrics([metric("lat", float(round_ * 10 + i))
                                             for i in range(5)])
            await b.add_performance_metrics([metric("lat", 7.0), metric(f"s{round_}", 1e9)])
            if round_ == 2:
                await a.add_performance_metric(PerformanceMetric(
                    source_agent="svc", name="lat", value=123456.0,
                    timestamp=clock() - 5 * 3600))  # an old, closed bucket
            if round_ == 3:
                await a.flush()
            for hours in (1, 24, 168):
                mine = await reader.get_performance_summary(hours=hours)
                assert mine == await fresh_summary(db_url, hours, clock())
            clock.advance(61)


async def test_a_handle_reads_its_own_writes(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests", clock=FakeClock()) as shared:
        for i in range(1, 5):
            await shared.add_performance_metric(metric("own", float(i)))
            summary = await shared.get_performance_summary(hours=1)
            assert summary["series"]["svc/own"]["count"] == i
            assert summary["series"]["svc/own"]["max"] == float(i)
        pid = await shared.add_error_pattern("ValueError", "bad row 1", "svc")
        assert [p["pattern_id"] for p in await shared.get_error_patterns()] == [pid]
        await shared.flush()
        await shared.add_performance_metric(metric("own", 0.5))
        summary = await shared.get_performance_summary(hours=1)
        assert summary["series"]["svc/own"]["count"] == 5
        assert summary["series"]["svc/own"]["min"] == 0.5


async def test_the_callers_cache_is_shared_across_handles(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's ``cache=``: a new handle on the same database reuses the decoded
    checkpoint and overlay another handle left in it."""
    if db_url.startswith("memory://"):
        pytest.skip("a memory database is private to its handle")
    async with SharedState.open(db_url, producer="writer") as writer:
        await writer.add_performance_metric(metric("x", 1.0))
        await writer.flush()
        await writer.add_performance_metric(metric("x", 2.0))
        cache: dict = {}
        async with SharedState.open(db_url, producer="r1", read_only=True) as r1:
            first = await r1.read(cache=cache)
        async with SharedState.open(db_url, producer="r2", read_only=True) as r2:
            counting = Counting(monkeypatch, r2)
            assert await r2.read(cache=cache) is first
            assert counting.loads == 0 and counting.rows == 0


async def test_a_new_checkpoint_read_by_a_new_handle_decodes_only_its_new_entries(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller's cache keeps the decoded tree too (``Backend.share_trees``): after a tick,
    a new handle (the dashboard opens one per read) reads the entries born since, not the
    whole state, and gets what a fresh handle gets."""
    if db_url.startswith("memory://"):
        pytest.skip("a memory database is private to its handle")
    built: list[int] = []  # entries decoded per tree build
    real_build = tree.build

    def counted_build(serde, rows, *args, **kwargs):
        built.append(len(rows))
        return real_build(serde, rows, *args, **kwargs)

    monkeypatch.setattr(tree, "build", counted_build)
    clock = FakeClock()
    async with SharedState.open(db_url, producer="writer", clock=clock) as writer:
        await writer.add_performance_metrics([metric(f"s{i}", float(i)) for i in range(40)])
        await writer.flush()
        cache: dict = {}
        async with SharedState.open(db_url, producer="r1", read_only=True, clock=clock) as r1:
            await r1.read(cache=cache)
        whole = sum(built)
        await writer.add_performance_metric(metric("s7", 1000.0))
        await writer.flush()
        built.clear()
        async with SharedState.open(db_url, producer="r2", read_only=True, clock=clock) as r2:
            mine = queries.performance_summary(await r2.read(cache=cache), 1, clock())
        if whole:  # a backend that stores checkpoints as entries (SQLite, PostgreSQL)
            assert 0 < sum(built) < whole / 4, (built, whole)
        assert mine["series"]["svc/s7"]["count"] == 2
        assert mine == await fresh_summary(db_url, 1, clock())


async def test_a_read_after_a_new_checkpoint_recomputes_only_the_series_that_changed(
        db_url: str) -> None:
    """After a tick that folded one event of one series, a reader's summaries equal a fresh
    decode's (the new event is in, nothing stale), and every other series' row is the one
    read before (``queries.performance_summary`` reuses it: its buckets are the same objects
    in the new checkpoint); also after the clock moved the windows on."""
    if db_url.startswith("memory://"):
        pytest.skip("a memory database is private to its handle")
    clock = FakeClock()
    hours = (1, 24, 168)
    async with SharedState.open(db_url, producer="writer", clock=clock) as writer, \
            SharedState.open(db_url, producer="reader", read_only=True,
                             clock=clock) as reader:
        now = clock()
        await writer.add_performance_metrics([
            PerformanceMetric(source_agent="svc", name=f"s{s}", value=1.1 * (s + i),
                              unit="ms", timestamp=now - i * 97.0)
            for s in range(12) for i in range(40)])  # an hour of minute buckets, 1 h ones
        await writer.flush()
        before_state = await reader.read()
        before = {h: await reader.get_performance_summary(hours=h) for h in hours}

        await writer.add_performance_metric(metric("s7", 1000.0))
        await writer.flush()
        after_state = await reader.read()
        shared = after_state["metrics"]["svc/s0"] is before_state["metrics"]["svc/s0"]
        afters = {h: await reader.get_performance_summary(hours=h) for h in hours}
        for h, after in afters.items():  # (fresh_summary empties the memo)
            assert after == await fresh_summary(db_url, h, clock())
            assert after["series"]["svc/s7"]["count"] == \
                before[h]["series"]["svc/s7"]["count"] + 1
            assert after["series"]["svc/s7"]["max"] == 1000.0
            assert after["overall"]["max"] == 1000.0
            others = [s for s in after["series"] if s != "svc/s7"]
            assert len(others) == 11
            assert all(after["series"][s] == before[h]["series"][s] for s in others)
            if shared:  # the backend shares unchanged entries between checkpoints
                assert [s for s in after["series"]
                        if after["series"][s] is not before[h]["series"][s]] == ["svc/s7"]

        clock.advance(61)  # every window moves on by a minute: the oldest bucket leaves
        await writer.add_performance_metric(metric("s3", 2000.0))
        await writer.flush()
        for h in hours:
            moved = await reader.get_performance_summary(hours=h)
            assert moved == await fresh_summary(db_url, h, clock())
            assert moved["series"]["svc/s3"]["max"] == 2000.0
