"""Checkpoint size against event count: the state must stay flat as events grow.

For each N (default 10k, 100k, 1M) writes N metric events over 50 series into a fresh SQLite
database through the batch API, flushing periodically, then reports the size of the latest
checkpoint blob, the database file (+ -wal) and how many series and buckets the state holds.

Timestamps cover the whole retention window (defaults: 120 x 1 min, 168 x 1 h, 30 x 1 d): a
third of the events fall in the last 2 hours, a third in the last 7 days and a third in the
last 29 days, so every tier fills up; values are long-tailed (lognormal), so sketches use many
bins. For the smallest N it also folds the same events into the naive design (a LangGraph
``Annotated[list, operator.add]`` channel on ``SqliteSaver``) for contrast.

    .venv/bin/python bench/checkpoint_size.py
    .venv/bin/python bench/checkpoint_size.py --sizes 10k,100k,300k,1M --no-naive
"""

from __future__ import annotations

import asyncio
import operator
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from _common import (
    fmt_bytes,
    int_list,
    latency,
    machine,
    parser,
    print_table,
    series_names,
    sqlite_url,
    temp_dir,
)
from langchain_core.runnables import RunnableConfig

from state import PerformanceMetric, SharedState, sketch

TARGET_BYTES = 2 * 1024 * 1024
SERIES = series_names()
MINUTE, HOUR, DAY = 60, 3600, 86400


def age_seconds(rng: random.Random) -> float:
    """How far back an event lies: fills the 1 m, 1 h and 1 d tiers alike."""
    r = rng.random()
    if r < 1 / 3:
        return rng.random() * 120 * MINUTE
    if r < 2 / 3:
        return rng.random() * 168 * HOUR
    return rng.random() * 29 * DAY


def events(n: int, rng: random.Random, now: float) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        agent, name = SERIES[i % len(SERIES)]
        out.append({"source_agent": agent, "name": name, "value": latency(rng), "unit": "ms",
                    "timestamp": now - age_seconds(rng)})
    return out


def sql_sizes(path: Path, thread_id: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        latest = conn.execute(
            "SELECT length(checkpoint) FROM checkpoints WHERE thread_id=? AND checkpoint_ns='' "
            "ORDER BY checkpoint_id DESC LIMIT 1", (thread_id,)).fetchone()
        kept, total = conn.execute(
            "SELECT count(*), coalesce(sum(length(checkpoint)), 0) FROM checkpoints").fetchone()
        writes = conn.execute(
            "SELECT coalesce(sum(length(value)), 0) FROM writes").fetchone()[0]
        has_inbox = conn.execute("SELECT 1 FROM sqlite_master WHERE name='bga_inbox'").fetchone()
        inbox = conn.execute("SELECT count(*) FROM bga_inbox").fetchone()[0] if has_inbox else 0
        free = (conn.execute("PRAGMA freelist_count").fetchone()[0]
                * conn.execute("PRAGMA page_size").fetchone()[0])
    return {"latest": latest[0] if latest else 0, "kept": kept, "all_blobs": total,
            "writes": writes, "inbox": inbox, "free": free}


def file_sizes(path: Path) -> tuple[int, int]:
    wal = Path(f"{path}-wal")
    return path.stat().st_size, (wal.stat().st_size if wal.exists() else 0)


def bucket_counts(state: dict[str, Any]) -> dict[str, float]:
    counts: dict[str, float] = {"1m": 0, "1h": 0, "1d": 0}
    bins = buckets = 0
    for data in (state.get("metrics") or {}).values():
        for tier, b in data["tiers"].items():
            counts[tier] = counts.get(tier, 0) + len(b)
            for agg in b.values():
                bins += sketch.bin_count(agg)
                buckets += 1
    counts["bins_per_bucket"] = round(bins / buckets, 1) if buckets else 0
    return counts


async def measure(path: Path, n: int, args: Any, rng: random.Random) -> dict[str, Any]:
    t_write = t_flush = 0.0
    async with SharedState.open(sqlite_url(path), producer="bench-size") as shared:
        done = since_flush = 0
        while done < n:
            size = min(args.batch, n - done)
            batch = events(size, rng, time.time())
            t0 = time.perf_counter()
            await shared.add_performance_metrics([PerformanceMetric(**e) for e in batch])
            t_write += time.perf_counter() - t0
            done += size
            since_flush += size
            if since_flush >= args.flush_every or done == n:
                t0 = time.perf_counter()
                await shared.flush()
                t_flush += time.perf_counter() - t0
                since_flush = 0
        state = await shared.read()
        thread_id = str(shared.thread_id)
    db, wal = file_sizes(path)
    sizes = sql_sizes(path, thread_id)
    counts = bucket_counts(state)
    folded = sum(a[sketch.COUNT] for d in state["metrics"].values()
                 for a in d["tiers"]["1d"].values())
    return {"n": n, "series": len(state.get("metrics") or {}), **counts, **sizes, "db": db,
            "wal": wal, "write_s": t_write, "flush_s": t_flush, "kept_events": folded}


class NaiveState(TypedDict):
    metrics: Annotated[list, operator.add]


def naive(path: Path, n: int, per_update: int, rng: random.Random) -> dict[str, Any]:
    """The same events appended to a list channel, ``per_update`` events per checkpoint."""
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(NaiveState)
    builder.add_node("record", lambda state: {})
    builder.add_edge(START, "record")
    builder.add_edge("record", END)
    config: RunnableConfig = {"configurable": {"thread_id": "system"}}
    evs = events(n, rng, time.time())
    t0 = time.perf_counter()
    with SqliteSaver.from_conn_string(str(path)) as saver:
        graph = builder.compile(checkpointer=saver)
        for start in range(0, n, per_update):
            graph.update_state(config, {"metrics": evs[start:start + per_update]},
                               as_node="record")
    dt = time.perf_counter() - t0
    db, wal = file_sizes(path)
    sizes = sql_sizes(path, "system")
    return {**sizes, "n": n, "db": db, "wal": wal, "seconds": dt}


async def run(args: Any) -> None:
    rng = random.Random(args.seed)
    results = []
    naive_rows = []
    with temp_dir(args.dir) as tmp:
        for n in args.sizes:
            t0 = time.perf_counter()
            r = await measure(tmp / f"size{n}.db", n, args, rng)
            print(f"{n:,} events: {time.perf_counter() - t0:.1f} s; events counted in the 1d "
                  f"tier: {r['kept_events']:,}; inbox rows left: {r['inbox']:,}; pending-write "
                  f"blobs: {fmt_bytes(r['writes'])}", file=sys.stderr)
            results.append(r)
        if args.naive and args.sizes:
            n = min(args.sizes)
            naive_rows.append(naive(tmp / "naive.db", n, args.naive_per_update, rng))

    full = {"1m": 120 * len(SERIES), "1h": 168 * len(SERIES), "1d": 30 * len(SERIES)}
    rows = []
    for r in results:
        ok = "yes" if r["latest"] <= TARGET_BYTES else "MISS"
        rows.append([
            f"{r['n']:,}", r["series"], f"{r['1m']:,} / {r['1h']:,} / {r['1d']:,}",
            r["bins_per_bucket"], fmt_bytes(r["latest"]), ok, r["kept"],
            fmt_bytes(r["all_blobs"]), fmt_bytes(r["writes"]), fmt_bytes(r["db"] + r["wal"]),
            fmt_bytes(r["free"]), round(r["write_s"], 1), round(r["flush_s"], 1),
        ])
    for r in naive_rows:
        rows.append([
            f"{r['n']:,} naive list", "", "", "", fmt_bytes(r["latest"]),
            "yes" if r["latest"] <= TARGET_BYTES else "MISS", r["kept"],
            fmt_bytes(r["all_blobs"]), fmt_bytes(r["writes"]), fmt_bytes(r["db"] + r["wal"]),
            fmt_bytes(r["free"]), round(r["seconds"], 1), "",
        ])
    first, last = results[0], results[-1]
    notes = [
        f"full retention with {len(SERIES)} series = {full['1m']:,} x 1m + {full['1h']:,} x 1h "
        f"+ {full['1d']:,} x 1d buckets; target: latest checkpoint <= 2 MB and flat in N.",
        f"latest checkpoint grew x{last['latest'] / max(1, first['latest']):.2f} while events "
        f"grew x{last['n'] / first['n']:.0f}.",
        f"API runs flush every {args.flush_every:,} events; all ckpts = every checkpoint blob "
        "kept (retention.checkpoints); writes tbl = LangGraph's stored update_state writes.",
        "free in db = free pages left by folded (deleted) inbox rows, reused by later writes.",
    ]
    if naive_rows:
        notes.append(f"naive: one update_state per {args.naive_per_update} events, each "
                     "checkpoint stores the whole list again.")
    print_table(
        f"Checkpoint size vs events, SQLite ({machine()})",
        ["events", "series", "buckets 1m / 1h / 1d", "bins/bkt", "latest ckpt", "<= 2 MB",
         "ckpts kept", "all ckpts", "writes tbl", "db + wal", "free in db", "write s",
         "flush s"],
        rows, plain=args.plain, notes=notes)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int_list, default=[10_000, 100_000, 1_000_000],
                   help="event counts, comma-separated (k / M suffixes allowed)")
    p.add_argument("--batch", type=int, default=10_000, help="metrics per API batch call")
    p.add_argument("--flush-every", type=int, default=200_000, help="events between flushes")
    p.add_argument("--no-naive", dest="naive", action="store_false",
                   help="skip the naive list-channel contrast")
    p.add_argument("--naive-per-update", type=int, default=100,
                   help="events per update_state in the naive contrast")
    args = p.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
