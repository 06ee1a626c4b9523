"""Latency of one system tick, and checkpoint bytes per tick, on SQLite (and memory).

Tables:
  1. tick latency (median, p95 over ``--ticks`` ticks of ``graph.runner.tick``):
     - idle: nothing due (the built-in system_monitor ran in the warm-up tick and is not due
       again for 30 s), so a tick is fold + plan + review + optimize + one checkpoint + prune;
     - N trivial agents (``--agents``, default 1,10,50) with a tiny interval, so every one of
       them is due and fanned out (``Send``) on every tick.
  2. checkpoint bytes per tick on SQLite with ``--size-agents`` trivial agents after 10, 100
     and 300 ticks (``--marks``): size of the newest checkpoint row, bytes the last tick wrote
     (new checkpoint rows + their pending writes + the entries born with them,
     ``state.backends.tree``), checkpoints kept, database bytes in use
     (pages minus free pages) with their growth per tick since the previous mark, and the db
     and WAL file sizes. Flat is the target: the state is bounded and old checkpoints are
     pruned (``retention.checkpoints``).

Each tick is followed by what the scheduler (``graph.scheduler.run``) does between two ticks:
the garbage collector's upkeep (``graph.runner.settle_gc``: its first call, in the warm-up,
collects and freezes the warm heap), timed apart ("GC between ticks": not in the tick's
latency, the scheduler would be sleeping), and a read of the state (the scheduler reads its
tick interval from the config unless ``bga run --interval`` gives it). A tick's wall time
includes taking the fold lock and pruning; the graph is compiled once per checkpointer, in
the warm-up. Figures are measured, not pass/fail.

    .venv/bin/python bench/tick_latency.py            # ~10 s
    .venv/bin/python bench/tick_latency.py --agents 1,10,50,100 --ticks 50 --plain
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import time
import uuid
from pathlib import Path

from _common import (
    db_files,
    fmt_bytes,
    int_list,
    machine,
    median,
    parser,
    percentile,
    print_table,
    sqlite_url,
    temp_dir,
    verdict,
)

from graph.runner import settle_gc, tick
from nodes.base import Agent, AgentContext
from state import SharedState
from state.checkpoints import thaw_heap

IDLE_TARGET_MS = 50.0
FIFTY_AGENTS_TARGET_MS = 250.0
TINY_INTERVAL = 0.001


class TrivialAgent(Agent):
    """The smallest useful agent: one metric and one counter in its persistent data."""

    kind = "trivial"

    async def step(self, ctx: AgentContext) -> None:
        ctx.metric("ticks", 1)
        ctx.set_data(counter=int(ctx.data.get("counter", 0)) + 1)


TRIVIAL = f"{TrivialAgent.__module__}:TrivialAgent"


def target_for(n_agents: int) -> float | None:
    if n_agents == 0:
        return IDLE_TARGET_MS
    if n_agents <= 50:
        return FIFTY_AGENTS_TARGET_MS
    return None


async def configure_trivial(shared: SharedState, n: int) -> None:
    if n:  # the operator allow-lists the bench's agent class (state.policy)
        os.environ.setdefault("BGA_AGENT_CLASSES", TRIVIAL)
        await shared.update_config({"agents": {
            f"trivial_{i:03d}": {"class": TRIVIAL, "interval_s": TINY_INTERVAL}
            for i in range(n)}})


async def tick_latency(url: str, n_agents: int, ticks: int) -> dict:
    thaw_heap()  # each scenario as a fresh scheduler process: its first settle_gc freezes
    async with SharedState.open(url, producer="bench") as shared:
        await configure_trivial(shared, n_agents)
        warm_gc = []
        for _ in range(2):  # warm-up: registrations, first system_monitor step, imports
            await tick(shared)
            warm_gc.append(settle_gc() * 1000)  # as the scheduler does after every tick
            await shared.read()
        samples, between = [], []
        gc.collect()
        for _ in range(ticks):
            t0 = time.perf_counter()
            await tick(shared)
            samples.append((time.perf_counter() - t0) * 1000)
            between.append(settle_gc() * 1000)
            await shared.read()
        last = (await shared.get_system_state())["values"]["last_tick"]
        if len(last["agents_run"]) != n_agents:
            raise RuntimeError(f"expected {n_agents} agents per tick, ran {last['agents_run']}")
    return {"median": median(samples), "p95": percentile(samples, 95),
            "max": max(samples), "ran": len(last["agents_run"]),
            "gc": f"{warm_gc[0]:.0f} once, then <= {max(warm_gc[1:] + between):.2f}"}


def checkpoint_sizes(path: Path, thread_id: str) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        newest = conn.execute(
            "SELECT checkpoint_id, length(checkpoint) + length(metadata) FROM checkpoints "
            "WHERE thread_id=? AND checkpoint_ns='' ORDER BY checkpoint_id DESC LIMIT 1",
            (thread_id,)).fetchone()
        kept = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id=?",
                            (thread_id,)).fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return {"newest_id": newest[0], "newest_bytes": newest[1], "kept": kept,
            "live_bytes": (pages - free) * page}


def written_since(path: Path, thread_id: str, after_id: str) -> tuple[int, int]:
    """(checkpoint rows, bytes) written after checkpoint ``after_id`` (rows and their writes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows, cp_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(length(checkpoint) + length(metadata)), 0) "
            "FROM checkpoints WHERE thread_id=? AND checkpoint_id > ?",
            (thread_id, after_id)).fetchone()
        w_bytes = conn.execute(
            "SELECT coalesce(sum(length(value)), 0) FROM writes "
            "WHERE thread_id=? AND checkpoint_id > ?", (thread_id, after_id)).fetchone()[0]
        e_bytes = conn.execute(  # the entries born with them (state.backends.tree)
            "SELECT coalesce(sum(length(path) + length(value) + length(born)), 0) FROM "
            "bga_tree_entries WHERE thread_id=? AND born > ?", (thread_id, after_id)).fetchone()[0]
    finally:
        conn.close()
    return rows, cp_bytes + w_bytes + e_bytes


async def checkpoint_growth(path: Path, n_agents: int, marks: list[int]) -> list[list]:
    rows: list[list] = []
    async with SharedState.open(sqlite_url(path), producer="bench") as shared:
        await configure_trivial(shared, n_agents)
        done = 0
        prev_size = None
        prev_done = 0
        for mark in marks:
            while done < mark - 1:
                await tick(shared)
                done += 1
            before = checkpoint_sizes(path, shared.thread_id)["newest_id"] if done else ""
            await tick(shared)  # the measured tick
            done += 1
            n_rows, last_bytes = written_since(path, shared.thread_id, before)
            sizes = checkpoint_sizes(path, shared.thread_id)
            files = db_files(path)
            size = sizes["live_bytes"]
            growth = None if prev_size is None else (size - prev_size) / (done - prev_done)
            rows.append([f"after {done} ticks", fmt_bytes(sizes["newest_bytes"]),
                         f"{fmt_bytes(last_bytes)} ({n_rows} ckpt)", sizes["kept"],
                         fmt_bytes(size), "—" if growth is None else fmt_bytes(growth),
                         fmt_bytes(files["db"]), fmt_bytes(files["-wal"])])
            prev_size, prev_done = size, done
    return rows


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--ticks", type=int, default=30, help="measured ticks per scenario")
    p.add_argument("--agents", type=int_list, default=[1, 10, 50],
                   help="numbers of trivial agents (comma-separated)")
    p.add_argument("--backends", default="sqlite,memory", help="sqlite and/or memory")
    p.add_argument("--size-agents", type=int, default=10,
                   help="trivial agents in the checkpoint-size run")
    p.add_argument("--marks", type=int_list, default=[10, 100, 300],
                   help="tick counts at which checkpoint sizes are taken")
    args = p.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    latency_rows = []
    with temp_dir(args.dir) as tmp:
        for backend in backends:
            for n in [0, *args.agents]:
                url = (sqlite_url(tmp / f"lat_{n}.db") if backend == "sqlite"
                       else f"memory://bench-{uuid.uuid4().hex}")
                r = asyncio.run(tick_latency(url, n, args.ticks))
                target = target_for(n)
                latency_rows.append([
                    backend, "idle (nothing due)" if n == 0 else f"{n} trivial agents",
                    r["ran"], r["median"], r["p95"], r["max"], r["gc"],
                    "—" if target is None else f"< {target:.0f} ms",
                    "—" if target is None else verdict(r["p95"], target,
                                                       higher_is_better=False)])
        size_rows = asyncio.run(checkpoint_growth(tmp / "size.db", args.size_agents,
                                                  sorted(args.marks)))

    print_table(
        f"Tick latency, {args.ticks} ticks per row ({machine()})",
        ["backend", "scenario", "agents/tick", "median ms", "p95 ms", "max ms",
         "GC between ticks ms", "target", "p95 meets"],
        latency_rows, plain=args.plain,
        notes=["a tick = fold lock + fold inbox + plan + fan-out + review + optimize + one "
               "checkpoint + prune",
               "GC between ticks: graph.runner.settle_gc after each tick, as the scheduler "
               "runs it before sleeping (not in the tick's latency); once = its first call, "
               "in the warm-up (full collection + gc.freeze), then the most a later call took",
               "the target is judged on p95"])
    print_table(
        f"Checkpoint bytes per tick, SQLite, {args.size_agents} trivial agents + "
        "system_monitor",
        ["when", "newest checkpoint", "written by last tick", "checkpoints kept",
         "database in use", "growth / tick", "db file", "WAL file"],
        size_rows, plain=args.plain,
        notes=["database in use: pages in use (page_count - freelist_count) x page_size, as "
               "a reader sees it (WAL included); growth per tick is since the previous row",
               "checkpoints beyond retention.checkpoints (100) are pruned, their pages reused; "
               "the file sizes are high-water marks (SQLite does not shrink the WAL file)",
               "the newest checkpoint still moves a little: step_ms sketches gain log bins "
               "(at most 128 per bucket) and each new minute adds a bucket per series "
               "(retention.minute_buckets caps them) — bounded by time and config, not ticks",
               "target: newest checkpoint and bytes per tick flat as ticks accumulate"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
