"""Database trouble is survived: the scheduler says what happened in one line, backs off,
stands down and competes again; a corrupt file or a full disk is called by its name."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from graph import runner, scheduler
from state import SharedState
from state.backends import describe_trouble


async def test_scheduler_rides_out_a_full_disk_and_resumes(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_tick = runner.tick
    failures = {"left": 2}

    async def full_disk_twice(shared, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real_tick(shared, **kwargs)

    monkeypatch.setattr(runner, "tick", full_disk_twice)
    monkeypatch.setattr(scheduler, "BACKOFF_S", (0.01, 0.02))  # waits are not under test
    lines: list[str] = []
    async with SharedState.open(sqlite_url, producer="scheduler") as shared:
        ticks = await scheduler.run(shared, stop=asyncio.Event(), notify=lines.append,
                                    interval_s=0.01, max_ticks=3)
        state = await shared.read()
    assert ticks == 3 and state["tick"]["n"] == 3
    trouble = [line for line in lines if "disk full at" in line]
    assert len(trouble) == 1, lines  # one line per spell of trouble, not one per retry
    assert "\n" not in trouble[0] and "standing down" in trouble[0]
    assert sum("works again after 2 failed attempt(s)" in line for line in lines) == 1, lines


async def test_scheduler_rides_out_lost_connections(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_tick = runner.tick
    errors = [ConnectionError("server closed the connection unexpectedly"),
              OSError("connection refused")]

    async def flaky(shared, **kwargs):
        if errors:
            raise errors.pop(0)
        return await real_tick(shared, **kwargs)

    monkeypatch.setattr(runner, "tick", flaky)
    monkeypatch.setattr(scheduler, "BACKOFF_S", (0.01, 0.02))
    lines: list[str] = []
    async with SharedState.open(db_url, producer="scheduler") as shared:
        assert await scheduler.run(shared, stop=asyncio.Event(), notify=lines.append,
                                   interval_s=0.01, max_ticks=2) == 2
    assert sum("connection to the server lost" in line for line in lines) == 1
    assert sum("server unreachable" in line for line in lines) == 1


def test_a_corrupt_sqlite_file_is_called_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError) as err:
        asyncio.run(SharedState.open(f"sqlite:///{path}").__aenter__())
    line = describe_trouble(err.value, f"sqlite:///{path}")
    assert line.startswith("database file is corrupt at sqlite:///"), line


def test_cannot_rollback_means_the_disk_is_full() -> None:
    line = describe_trouble(sqlite3.OperationalError("cannot rollback - no transaction is "
                                                     "active"), "sqlite:///x.db")
    assert line.startswith("disk full")


async def test_a_read_never_waits_for_the_fold_lock(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many pending rows make a read fold them first, but only if the fold lock is free: a
    tick holding it (here another handle) leaves the read its overlay, never a wait."""
    from state import api

    monkeypatch.setattr(api, "OVERLAY_LIMIT", 5)
    async with SharedState.open(db_url, producer="w") as shared, \
            SharedState.open(db_url, producer="ticker") as ticker:
        await shared.add_performance_metrics(
            [{"source_agent": "w", "name": "n", "value": 1.0}] * 20)
        async with ticker.backend.fold_lock(wait=0):
            summary = await asyncio.wait_for(shared.get_performance_summary(), timeout=120)
            assert summary["series"]["w/n"]["count"] == 20
            assert shared.pending == 20  # not folded: the lock was busy
        await shared.get_performance_summary()  # the lock is free: this read folds them
        assert shared.pending == 0
        assert (await shared.get_performance_summary())["series"]["w/n"]["count"] == 20
