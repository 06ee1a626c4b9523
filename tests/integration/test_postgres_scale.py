"""The PostgreSQL backend under concurrency: OS processes writing at once, a late commit.

Like test_concurrency.py but on PostgreSQL: several writer processes and a folder process
share one state, and every read shows, per producer, exactly the first K events for one K.
The late-commit test holds one producer's inbox transaction open while others commit and a
fold runs: sequence order is not commit order, and the rows that commit late must be folded
by the next fold exactly once (neither skipped nor doubled).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from state import SharedState
from tests.integration.workers import (
    expected_view,
    inbox_truth,
    observe,
    run_writers_while_reading,
    write_events,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

WRITERS = 8
EVENTS = 4_000
CHUNK = 50
RUN_TIMEOUT_S = 120.0


async def test_writer_processes_and_folder_count_exactly_on_postgres(
    postgres_url: str, tmp_path: Path, spawner
) -> None:
    producers = [f"p{i}" for i in range(WRITERS)]
    reads, folder_rows = await run_writers_while_reading(
        postgres_url, tmp_path, spawner, producers, EVENTS, CHUNK, RUN_TIMEOUT_S)

    truth = inbox_truth(postgres_url)
    for p in producers:
        assert len(truth[p]["streams"]) == 1, truth[p]  # one stream per SharedState
        assert truth[p]["kinds"] == {}, truth[p]  # nothing pending

    want = expected_view(EVENTS)
    total = WRITERS * EVENTS
    async with SharedState.open(postgres_url, producer="checker") as shared:
        before = observe(await shared.read(), producers)
        assert before == dict.fromkeys(producers, want), before
        report = await shared.flush()
        assert report.rows == 0
        state = await shared.read()
        assert observe(state, producers) == before
        assert state["stats"]["events_folded"] == total, state["stats"]
        assert state["stats"].get("quarantined", 0) == 0
        assert folder_rows == total, f"fold reports add up to {folder_rows}, not {total}"
        assert await shared.backend.pending_count() == 0
        assert await shared.backend.quarantined() == []
    print(f"\n{reads} concurrent reads; {WRITERS} writers x {EVENTS} events on PostgreSQL")


async def test_late_committing_producer_is_folded_exactly_once(postgres_url: str) -> None:
    late_n, early_n = 300, 500
    early = ["e0", "e1"]
    async with SharedState.open(postgres_url, producer="late") as late, \
            SharedState.open(postgres_url, producer="folder") as folder:
        backend = late.backend
        held, release = asyncio.Event(), asyncio.Event()
        original = backend.append

        async def append_held_open(stream, rows):
            """The first batch: inserted, then the transaction stays open until released."""
            backend.append = original
            async with backend._conn() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.executemany("INSERT INTO bga_inbox VALUES (%s, %s, %s, %s)",
                                      [(stream, seq, kind, p) for seq, kind, p in rows])
                held.set()
                await release.wait()

        backend.append = append_held_open
        # The late producer opens its stream first (lowest stream id, lowest sequence
        # numbers) and starts writing; its first transaction does not commit yet.
        late_task = asyncio.create_task(write_events(late, "late", late_n, chunk=100))
        await asyncio.wait_for(held.wait(), 30)

        for p in early:  # others commit after it started, and a fold runs meanwhile
            async with SharedState.open(postgres_url, producer=p) as shared:
                await write_events(shared, p, early_n)
        report = await folder.flush()
        assert report.rows == len(early) * early_n
        view = observe(await folder.read(), ["late", *early])
        assert view["late"] == expected_view(0), view["late"]
        for p in early:
            assert view[p] == expected_view(early_n), (p, view[p])
        assert not late_task.done()

        release.set()  # the late transaction commits, then its remaining batches
        assert await asyncio.wait_for(late_task, 30) == late_n
        report = await folder.flush()
        assert report.rows == late_n
        assert (await folder.flush()).rows == 0  # nothing left over, nothing folded twice
        state = await folder.read()
        view = observe(state, ["late", *early])
        assert view["late"] == expected_view(late_n), view["late"]
        for p in early:
            assert view[p] == expected_view(early_n), (p, view[p])
        assert state["stats"]["events_folded"] == late_n + len(early) * early_n
        assert await folder.backend.pending_count() == 0
