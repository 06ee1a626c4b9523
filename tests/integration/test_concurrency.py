"""Several OS processes write one SQLite state at once while another folds: exact counts.

Each writer's committed rows are always a prefix of its event sequence (one stream, one writer
task committing in sequence order), so any consistent read must show, per producer, exactly the
counts of the first K events for one K: ``K`` is the sum of the four kind counts and the view
must equal ``expected_view(K)``. A lost batch or a batch counted twice breaks that equality
(or the latest heartbeat index), and ``K`` must lie between what the writer had acknowledged
before the read and what it attempted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from state import SharedState
from state.backends.sqlite import path_from_url
from tests.integration.workers import KINDS, expected_view, inbox_truth, observe

pytestmark = pytest.mark.slow

WRITERS = 4
EVENTS = 5_000
CHUNK = 50
RUN_TIMEOUT_S = 90.0


def prefix_length(view: dict[str, int]) -> int:
    """How many events a per-producer view accounts for (each event is exactly one kind)."""
    return view["metric"] + view["error"] + view["insight"] + view["heartbeat"]


async def test_concurrent_writer_processes_and_folder_count_exactly(
    sqlite_url: str, tmp_path: Path, spawner
) -> None:
    producers = [f"p{i}" for i in range(WRITERS)]
    stop = tmp_path / "stop-folding"
    spawner.spawn("folder", "fold", sqlite_url, "0", "0.02", str(stop))
    await spawner.wait_line("folder", lambda line: line == "OPEN")
    for p in producers:
        spawner.spawn(p, "write", sqlite_url, p, str(EVENTS), str(CHUNK))

    # Read while they write: every read is one consistent prefix per producer, never below
    # what was acknowledged before it (read-your-writes across processes), never going back.
    reads = 0
    last = dict.fromkeys(producers, 0)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    async with SharedState.open(sqlite_url, producer="observer", read_only=True) as shared:
        while True:
            running = [p for p in producers if spawner.procs[p].poll() is None]
            floor = {p: spawner.acked(p) for p in producers}
            view = observe(await shared.read(), producers)
            reads += 1
            for p in producers:
                k = prefix_length(view[p])
                assert floor[p] <= k <= EVENTS, (p, k, floor[p], view[p])
                assert view[p] == expected_view(k), (p, k, view[p])
                assert k >= last[p], f"{p} went back from {last[p]} to {k} events"
                last[p] = k
            if not running:
                break
            assert time.monotonic() < deadline, [spawner.describe(p) for p in running]
            await asyncio.sleep(0.05)

    for p in producers:
        assert await spawner.wait_exit(p, 30) == 0, spawner.describe(p)
        assert spawner.lines(p)[-1] == f"DONE {EVENTS}", spawner.describe(p)
    stop.touch()
    assert await spawner.wait_exit("folder", RUN_TIMEOUT_S) == 0, spawner.describe("folder")
    folder_rows = sum(int(line.split()[2]) for line in spawner.lines("folder")
                      if line.startswith("FOLD "))

    # The folder's last flush started after every writer had finished: nothing is pending.
    truth = inbox_truth(path_from_url(sqlite_url))
    assert all(not rec["kinds"] for rec in truth.values()), truth
    for p in producers:
        assert len(truth[p]["streams"]) == 1, truth[p]  # one stream per SharedState

    want = expected_view(EVENTS)
    total = WRITERS * EVENTS
    async with SharedState.open(sqlite_url, producer="checker") as shared:
        before = observe(await shared.read(), producers)
        assert before == dict.fromkeys(producers, want), before
        assert sum(v["error_all"] for v in before.values()) == WRITERS * want["error"]
        report = await shared.flush()
        assert report.rows == 0
        state = await shared.read()
        after = observe(state, producers)
        assert after == before
        assert state["stats"]["events_folded"] == total, state["stats"]
        assert state["stats"].get("quarantined", 0) == 0
        assert folder_rows == total, f"fold reports add up to {folder_rows}, not {total}"
        assert await shared.backend.pending_count() == 0
        assert await shared.backend.quarantined() == []
    print(f"\n{reads} concurrent reads; {len(KINDS)} kinds x {WRITERS} writers x {EVENTS} events; "
          f"folder loops: {sum(1 for line in spawner.lines('folder') if line.startswith('FOLD'))}")
