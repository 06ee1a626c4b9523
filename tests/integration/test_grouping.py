"""Error grouping through the whole write path: concurrent writers, old states re-keyed."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from state import SharedState, queries
from state.checkpoints import load_values
from state.fingerprint import FINGERPRINT_VERSION, fingerprint
from state.fold import KIND_ERROR, InboxRow, fold_rows
from tests.integration import fingerprint_v1 as v1
from tests.integration.workers import TEMPLATE_ERROR, template_error

WRITERS = 4
MESSAGES = 2_000
RUN_TIMEOUT_S = 120.0


def test_the_template_mixes_all_digit_and_lettered_ids() -> None:
    ids = [template_error("p0", i).split(" for id ")[1].split()[0] for i in range(MESSAGES)]
    assert any(i.isdigit() for i in ids) and any(not i.isdigit() for i in ids)
    # the old rules split this template; the point of the test below is that it is one now
    assert len({v1.fingerprint(TEMPLATE_ERROR, template_error("p0", i))
                for i in range(50)}) > 1


@pytest.mark.slow
async def test_concurrent_writers_of_one_template_make_one_pattern(
    process_db_url: str, tmp_path: Path, spawner
) -> None:
    url = process_db_url
    producers = [f"w{i}" for i in range(WRITERS)]
    stop = tmp_path / "stop-folding"
    spawner.spawn("folder", "fold", url, "0", "0.02", str(stop))
    await spawner.wait_line("folder", lambda line: line == "OPEN")
    for p in producers:
        spawner.spawn(p, "errors", url, p, str(MESSAGES))
    for p in producers:
        assert await spawner.wait_exit(p, RUN_TIMEOUT_S) == 0, spawner.describe(p)
        assert spawner.lines(p)[-1] == f"DONE {MESSAGES}", spawner.describe(p)
    stop.touch()
    assert await spawner.wait_exit("folder", RUN_TIMEOUT_S) == 0, spawner.describe("folder")
    async with SharedState.open(url, producer="checker") as shared:
        await shared.flush()
        patterns = queries.error_patterns(await shared.read(), time.time(),
                                          error_type=TEMPLATE_ERROR, time_window_hours=24)
    assert len(patterns) == 1, [(p["normalized_message"], p["count"]) for p in patterns]
    (pattern,) = patterns
    assert pattern["count"] == pattern["frequency"] == WRITERS * MESSAGES
    assert pattern["pattern_id"] == fingerprint(TEMPLATE_ERROR, template_error("w0", 0))
    assert sorted(pattern["source_agents"]) == producers
    assert pattern["normalized_message"] == (
        "timeout after <duration> for id <num> on <host> (flag=<val>, attempt <num>)")


def _v1_event(message: str, error_type: str, ts: float) -> tuple[str, dict]:
    """An error event exactly as a producer running the old rules wrote it."""
    return KIND_ERROR, {"id": v1.fingerprint(error_type, message), "type": error_type,
                        "norm": v1.normalize_message(message), "msg": message, "a": "old",
                        "t": ts}


# (error type, messages): one template each; the old rules gave each template two patterns
OLD = [
    ("TimeoutError", ["timeout after 5 s for id 000100000005"] * 3
     + ["timeout after 12 s for id 0001000000a0"] * 2),
    ("ValueError", ["flag=true rejected"] * 4 + ["flag=false rejected"] * 3),
]


async def test_a_state_written_with_the_old_fingerprint_keeps_counting(db_url: str) -> None:
    now = time.time()
    old_events = [_v1_event(m, t, now - 120 + i) for t, msgs in OLD for i, m in enumerate(msgs)]
    old_ids = {e[1]["id"] for e in old_events}
    assert len(old_ids) == 4
    # a checkpoint of the old version: patterns keyed by the old ids, no version field
    rows = [InboxRow(1, n + 1, kind, orjson.dumps(p))
            for n, (kind, p) in enumerate(old_events)]
    folded = fold_rows(rows).delta["error_patterns"]
    old_state = {"error_patterns": {pid: {k: v for k, v in pat.items() if k != "fp"}
                                    for pid, pat in folded.items()}}
    new_ids = {t: fingerprint(t, msgs[0]) for t, msgs in OLD}
    assert not set(new_ids.values()) & old_ids
    async with SharedState.open(db_url, producer="upgrade") as shared:
        await shared.restore_state(queries.export_document(old_state))
        # on load: one pattern per template, counts merged exactly
        seen = {p["pattern_id"]: p for p in queries.error_patterns(await shared.read(), now)}
        assert set(seen) == set(new_ids.values())
        for t, msgs in OLD:
            assert seen[new_ids[t]]["count"] == len(msgs)
            assert seen[new_ids[t]]["error_type"] == t
        # new occurrences (new rules) and a straggler still on the old rules add up
        for t, msgs in OLD:
            for m in msgs[:2]:
                assert await shared.add_error_pattern(t, m, "new") == new_ids[t]
        await shared.write_events([_v1_event(OLD[0][1][-1], "TimeoutError", now)])
        await shared.flush()
        _, stored, _ = await load_values(shared.backend.checkpointer, shared.config)
        tup = await shared.backend.checkpointer.aget_tuple(shared.config)
        raw = tup.checkpoint["channel_values"]["error_patterns"]
        assert set(raw) == set(new_ids.values())  # the fold's compaction re-keyed the checkpoint
        assert all(p["fp"] == FINGERPRINT_VERSION for p in raw.values())
        want = {new_ids["TimeoutError"]: 5 + 2 + 1, new_ids["ValueError"]: 7 + 2}
        assert {pid: p["count"] for pid, p in raw.items()} == want
        assert {pid: sum(p["tiers"]["1m"].values()) for pid, p in raw.items()} == want
        assert {pid: sum(p["tiers"]["1d"].values()) for pid, p in raw.items()} == want
        assert sorted(raw[new_ids["ValueError"]]["sources"]) == ["new", "old"]
        assert {pid: p["count"] for pid, p in stored["error_patterns"].items()} == want
