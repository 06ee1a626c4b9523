"""SIGKILL writers and folders at random moments: nothing acknowledged is lost, none counted twice.

Every failure message carries the random seed; rerun with ``BGA_CRASH_SEED=<seed>`` to get the
same kill schedule (the moments are the same, what the killed process was doing may differ).
Both tests run on a SQLite file, a PostgreSQL schema and a Redis key prefix (``shared_db_url``);
the ground truth is read from the tables or keys directly (``inbox_truth``), not through the
backend under test.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from state import SharedState
from state.fold import KIND_ERROR, KIND_HEARTBEAT, KIND_INSIGHT, KIND_METRIC
from tests.integration.workers import (
    expected_counts,
    expected_view,
    inbox_truth,
    observe,
    redis_inbox,
    truth_db,
    write_events,
)

pytestmark = pytest.mark.slow

INBOX_KIND = {"metric": KIND_METRIC, "error": KIND_ERROR, "insight": KIND_INSIGHT,
              "heartbeat": KIND_HEARTBEAT}
WAIT_S = 60.0


def make_rng() -> tuple[int, random.Random]:
    seed = int(os.environ.get("BGA_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    return seed, random.Random(seed)


def combined_view(parts: list[int]) -> dict[str, int]:
    """What ``observe`` must show for a producer whose successive streams committed the first
    ``parts[i]`` events of their own sequence (the latest heartbeat is the last stream's)."""
    view = dict.fromkeys(expected_view(0), 0)
    for n in parts:
        for key, value in expected_view(n).items():
            if key != "last_hb":
                view[key] += value
    last = [n for n in parts if expected_view(n)["last_hb"] >= 0]
    view["last_hb"] = expected_view(last[-1])["last_hb"] if last else -1
    return view


async def views(url: str, producers: list[str]) -> tuple[dict, dict]:
    async with SharedState.open(url, producer="checker", read_only=True) as shared:
        state = await shared.read()
    return observe(state, producers), state


async def flush(url: str) -> int:
    async with SharedState.open(url, producer="checker") as shared:
        report = await shared.flush(wait=WAIT_S)
        assert await shared.backend.pending_count() == 0
        assert await shared.backend.quarantined() == []
        return report.rows


async def test_writers_killed_mid_write_keep_exactly_their_committed_prefix(
    shared_db_url: str, spawner
) -> None:
    """(a) Per killed writer: acknowledged <= committed <= attempted, the committed rows are a
    gap-free prefix 1..K of its stream, and the state shows exactly the first K events - before
    a fold (overlay), after a fold, and after the producer restarts and writes again."""
    seed, rng = make_rng()
    url = shared_db_url
    # Kept below the read overlay's row limit (100k): this test reads before folding.
    attempted, writers, restart = 30_000, 3, 400
    committed: dict[str, list[int]] = {}
    folded_total = 0

    for rnd in range(2):
        names = [f"k{rnd}{i}" for i in range(writers)]
        for p in names:
            spawner.spawn(p, "write", url, p, str(attempted), "100")
        for p in names:  # everyone is writing before the first kill
            await spawner.wait_line(p, lambda line: line.startswith("ACK "))
        delays = sorted((rng.uniform(0.0, 1.0), p) for p in names)
        elapsed = 0.0
        for delay, p in delays:
            await asyncio.sleep(delay - elapsed)
            elapsed = delay
            spawner.kill(p)
        truth = inbox_truth(url)  # final: kill() waited for the server to end their sessions
        for p in names:
            ctx = f"seed={seed} round={rnd} writer={p} ({spawner.describe(p)})"
            acked = spawner.acked(p)
            finished = spawner.lines(p)[-1:] == [f"DONE {attempted}"]
            assert finished or spawner.procs[p].returncode == -9, ctx
            assert len(truth[p]["streams"]) == 1, f"one SharedState, one stream: {truth[p]} {ctx}"
            (stream, k, lo, hi), = truth[p]["streams"]
            assert acked <= k <= attempted, f"acked {acked}, committed {k}: {ctx}"
            if k:
                assert (lo, hi) == (1, k), f"stream {stream} holds seqs {lo}..{hi} ({k}): {ctx}"
            want_kinds = {INBOX_KIND[kind]: n for kind, n in expected_counts(k).items() if n}
            assert truth[p]["kinds"] == want_kinds, f"not a prefix of the events: {ctx}"
            committed[p] = [k]

        view, _ = await views(url, list(committed))  # overlay on the last checkpoint
        for p, parts in committed.items():
            assert view[p] == combined_view(parts), f"seed={seed} round={rnd} {p} {parts}"
        folded_total += sum(committed[p][0] for p in names)
        assert await flush(url) == sum(committed[p][0] for p in names), f"seed={seed}"
        view, state = await views(url, list(committed))
        for p, parts in committed.items():
            assert view[p] == combined_view(parts), f"seed={seed} round={rnd} {p} {parts}"
        assert state["stats"]["events_folded"] == folded_total, f"seed={seed}"

    # The same producers start again (a new SharedState, so a new stream): counts add up.
    for p in list(committed):
        async with SharedState.open(url, producer=p) as shared:
            await write_events(shared, p, restart, 100)
        committed[p].append(restart)
    view, _ = await views(url, list(committed))
    for p, parts in committed.items():
        assert view[p] == combined_view(parts), f"seed={seed} {p} {parts}"
    assert await flush(url) == restart * len(committed)
    view, state = await views(url, list(committed))
    for p, parts in committed.items():
        assert view[p] == combined_view(parts), f"seed={seed} {p} {parts}"
    assert state["stats"]["events_folded"] == sum(map(sum, committed.values())), f"seed={seed}"
    print(f"\nseed={seed}: writers killed after committing "
          f"{ {p: parts[0] for p, parts in committed.items()} } of {attempted} events")


def unfolded_but_covered(url: str, marks: dict[int, int]) -> int:
    """Inbox rows at or below their stream's watermark: a fold committed, its delete did not."""
    if url.startswith("redis"):
        inbox = redis_inbox(url)
        return sum(1 for stream, mark in marks.items()
                   for seq, _ in inbox.get(int(stream), ("", []))[1] if seq <= int(mark))
    with truth_db(url) as query:
        return sum(query("SELECT count(*) FROM bga_inbox WHERE stream_id=? AND seq<=?",
                         (int(stream), int(mark)))[0][0] for stream, mark in marks.items())


async def test_folder_killed_mid_flush_folds_every_event_exactly_once(
    shared_db_url: str, spawner
) -> None:
    """(b) A folder process is SIGKILLed at a random moment of its flush() loop, ten times,
    with the inbox pre-filled by a writer process and this process appending meanwhile: after
    every kill the state (checkpoint + unfolded rows) counts each written event exactly once,
    and so does the final state after a flush here."""
    seed, rng = make_rng()
    url = shared_db_url
    producers = ["f0", "f1", "f2"]
    written: dict[str, list[int]] = {p: [] for p in producers}
    rounds = 10
    covered_rounds = 0
    folds_seen = 0

    prefill = rng.choice((4_000, 8_000))
    spawner.spawn("prefill", "write", url, producers[0], str(prefill), "200")
    assert await spawner.wait_exit("prefill", WAIT_S) == 0, spawner.describe("prefill")
    written[producers[0]].append(prefill)

    for rnd in range(rounds):
        ctx = f"seed={seed} round={rnd}"
        producer = producers[(rnd + 1) % len(producers)]
        backlog, more = rng.choice((2_000, 4_000, 6_000)), rng.choice((1_000, 3_000))
        delay = rng.uniform(0.0, 1.0)
        # Odd rounds: natural timing. Even rounds: the folder stalls around its checkpoint
        # write and its deletes, so kills land in those windows far more often.
        stall = "0" if rnd % 2 else "0.1"
        folder = f"folder{rnd}"
        spawner.spawn(folder, "fold", url, "0", "0", "-", stall)
        async with SharedState.open(url, producer=producer) as shared:
            # A backlog written while the folder starts, then more (same stream) while it folds.
            await write_events(shared, producer, backlog, 200)
            await spawner.wait_line(folder, lambda line: line == "OPEN")
            writing = asyncio.create_task(
                write_events(shared, producer, backlog + more, 100, start=backlog))
            await asyncio.sleep(delay)
            spawner.kill(folder)
            await asyncio.wait_for(writing, WAIT_S)
        written[producer].append(backlog + more)
        assert spawner.procs[folder].returncode == -9, f"{ctx}: {spawner.describe(folder)}"
        folds_seen += sum(1 for line in spawner.lines(folder) if line.startswith("FOLD "))

        view, state = await views(url, producers)
        if unfolded_but_covered(url, state.get("inbox") or {}):
            covered_rounds += 1
        for p in producers:
            assert view[p] == combined_view(written[p]), f"{ctx} {p} {written[p]}: {view[p]}"
        folded = (state.get("stats") or {}).get("events_folded", 0)
        assert folded <= sum(map(sum, written.values())), f"{ctx}: stats say {folded} folded"

    total = sum(map(sum, written.values()))
    await flush(url)
    view, state = await views(url, producers)
    for p in producers:
        assert view[p] == combined_view(written[p]), f"seed={seed} final {p} {written[p]}"
    assert state["stats"]["events_folded"] == total, f"seed={seed}: {state['stats']}"
    assert all(not rec["kinds"] for rec in inbox_truth(url).values()), f"seed={seed}"
    print(f"\nseed={seed}: {rounds} folder kills, {folds_seen} completed flushes seen, "
          f"{covered_rounds} kills left folded-but-undeleted rows")
