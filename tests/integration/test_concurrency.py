"""Several OS processes write one SQLite (or Redis) state at once while another folds: exact
counts.

Each writer's committed rows are always a prefix of its event sequence (one stream, one writer
task committing in sequence order), so any consistent read must show, per producer, exactly the
counts of the first K events for one K: ``K`` is the sum of the four kind counts and the view
must equal ``expected_view(K)``. A lost batch or a batch counted twice breaks that equality
(or the latest heartbeat index), and ``K`` must lie between what the writer had acknowledged
before the read and what it attempted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from state import SharedState
from tests.integration.workers import (
    KINDS,
    expected_view,
    inbox_truth,
    observe,
    run_writers_while_reading,
)

pytestmark = pytest.mark.slow

WRITERS = 4
EVENTS = 5_000
CHUNK = 50
RUN_TIMEOUT_S = 90.0


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def state_url(request: pytest.FixtureRequest) -> str:
    """A SQLite file or a Redis key prefix (PostgreSQL: ``test_postgres_scale``)."""
    return request.getfixturevalue(f"{request.param}_url")


async def test_concurrent_writer_processes_and_folder_count_exactly(
    state_url: str, tmp_path: Path, spawner
) -> None:
    sqlite_url = state_url
    producers = [f"p{i}" for i in range(WRITERS)]
    reads, folder_rows = await run_writers_while_reading(
        sqlite_url, tmp_path, spawner, producers, EVENTS, CHUNK, RUN_TIMEOUT_S)

    # The folder's last flush started after every writer had finished: nothing is pending.
    truth = inbox_truth(sqlite_url)
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
