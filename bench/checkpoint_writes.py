"""What a tick writes at full retention: checkpoint size, bytes per tick, database size, latency.

For each series count (``--series``, default 50,500) a fresh database is filled through the
API so that every series has all its buckets (120 x 1 m, 168 x 1 h, 30 x 1 d, a few events
each, long-tailed values), then ticks run (``graph.runner.tick``, as ``bga run`` does):

- idle ticks: nothing new arrives (the built-in system_monitor may come due);
- busy ticks: one new event in each of 50 series before the tick;
- ``--ticks`` ticks in all (default 300), with ``retention.checkpoints`` (100) kept.

Per tick it measures what the tick wrote to the checkpoint tables (the new checkpoint row,
its pending writes, the entries born with it and the rows it closed: ``state.backends.tree``)
and its wall time. The same run measures the old layout (``CasSqliteSaver(tree=False)``: every
checkpoint stores every channel whole, as LangGraph's SQLite saver does) on SQLite, with
fewer ticks (``--old-ticks``) since each costs the whole state.

    .venv/bin/python bench/checkpoint_writes.py
    .venv/bin/python bench/checkpoint_writes.py --series 50 --ticks 120 --plain
"""

from __future__ import annotations

import asyncio
import gc
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    fmt_bytes,
    int_list,
    latency,
    machine,
    median,
    parser,
    percentile,
    print_table,
    series_names,
    sqlite_url,
    temp_dir,
    verdict,
)

from graph.runner import tick
from state import PerformanceMetric, SharedState
from state.backends.sqlite import CasSqliteSaver
from state.backends.tree import TABLE, count

MINUTE, HOUR, DAY = 60, 3600, 86400
PER_BUCKET = 3
BUSY_SERIES = 50
IDLE_BYTES_TARGET = 50 * 1024
IDLE_P95_TARGET_MS = {50: 50.0, 500: 100.0}


def full_retention(series: list[tuple[str, str]], now: float, rng: random.Random
                   ) -> list[PerformanceMetric]:
    """Events filling every 1 m, 1 h and 1 d bucket of each series."""
    ages = ([m * MINUTE + 30 for m in range(120)] + [h * HOUR + 1800 for h in range(2, 168)]
            + [d * DAY + 43200 for d in range(7, 30)])
    return [PerformanceMetric(source_agent=agent, name=name, value=latency(rng), unit="ms",
                              timestamp=now - age - rng.random() * 20)
            for agent, name in series for age in ages for _ in range(PER_BUCKET)]


def stats(path: Path, thread_id: str, after: str) -> dict[str, Any]:
    """Bytes the checkpoints after ``after`` wrote, and the database's pages in use."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cp = conn.execute(
            "SELECT count(*), coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM "
            "checkpoints WHERE thread_id=? AND checkpoint_id > ?", (thread_id, after)).fetchone()
        writes = conn.execute("SELECT coalesce(sum(length(value)), 0) FROM writes WHERE "
                              "thread_id=? AND checkpoint_id > ?", (thread_id, after)).fetchone()
        born = conn.execute(
            f"SELECT count(*), coalesce(sum(length(path) + length(value) + length(born)), 0) "
            f"FROM {TABLE} WHERE thread_id=? AND born > ?", (thread_id, after)).fetchone()
        closed = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE thread_id=? AND died > ?",
                              (thread_id, after)).fetchone()[0]
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        newest = conn.execute("SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id=? "
                              "AND checkpoint_ns=''", (thread_id,)).fetchone()[0]
        row = conn.execute("SELECT length(checkpoint) + length(metadata) FROM checkpoints "
                           "WHERE thread_id=? AND checkpoint_id=?", (thread_id, newest)
                           ).fetchone()[0]
        live = conn.execute(f"SELECT coalesce(sum(length(path) + length(value)), 0) FROM "
                            f"{TABLE} WHERE thread_id=? AND died IS NULL", (thread_id,)
                            ).fetchone()[0]
    finally:
        conn.close()
    return {"written": cp[1] + writes[0] + born[1] + closed * 36, "entries": born[0],
            "closed": closed, "db": (pages - free) * page, "newest": newest,
            "checkpoint": row + live}


async def scenario(path: Path, n_series: int, ticks: int, tree: bool, rng: random.Random
                   ) -> dict[str, Any]:
    series = series_names(n_series)
    async with SharedState.open(sqlite_url(path), producer="bench") as shared:
        saver = shared.backend.checkpointer
        assert isinstance(saver, CasSqliteSaver)
        saver.tree = tree
        t0 = time.perf_counter()
        events = full_retention(series, time.time(), rng)
        for i in range(0, len(events), 20_000):
            await shared.add_performance_metrics(events[i:i + 20_000])
        await shared.flush()
        fill_s = time.perf_counter() - t0
        for _ in range(2):
            await tick(shared)
        thread = shared.thread_id
        idle_ms: list[float] = []
        busy_ms: list[float] = []
        idle_b: list[int] = []
        busy_b: list[int] = []
        gc.collect()
        for i in range(ticks):
            busy = i % 10 == 5
            if busy:  # one new event in each of 50 series
                await shared.add_performance_metrics([
                    PerformanceMetric(source_agent=a, name=n, value=latency(rng), unit="ms")
                    for a, n in series[:BUSY_SERIES]])
            before: str | None = (await asyncio.to_thread(stats, path, thread, ""))["newest"] \
                if i < 40 else None
            t1 = time.perf_counter()
            await tick(shared)
            ms = (time.perf_counter() - t1) * 1000
            (busy_ms if busy else idle_ms).append(ms)
            if before is not None:
                written = (await asyncio.to_thread(stats, path, thread, before))["written"]
                (busy_b if busy else idle_b).append(written)
        final = await asyncio.to_thread(stats, path, thread, "")
        root = saver.entries.latest.get(thread)
        entries = count(root[1]) if root else 0
    return {"series": n_series, "tree": tree, "ticks": ticks, "fill_s": fill_s,
            "idle_p50": median(idle_ms), "idle_p95": percentile(idle_ms, 95),
            "busy_p50": median(busy_ms) if busy_ms else None,
            "idle_bytes": median(idle_b), "idle_bytes_max": max(idle_b),
            "busy_bytes": median(busy_b) if busy_b else None,
            "checkpoint": final["checkpoint"], "db": final["db"], "entries": entries}


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int_list, default=[50, 500], help="series counts")
    p.add_argument("--ticks", type=int, default=300, help="ticks per run, tree layout")
    p.add_argument("--old-ticks", type=int, default=12,
                   help="ticks per run, old layout (0: skip it)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    results = []
    with temp_dir(args.dir) as tmp:
        for n in args.series:
            for tree, ticks in ((True, args.ticks), (False, args.old_ticks)):
                if not ticks:
                    continue
                r = asyncio.run(scenario(tmp / f"s{n}_{int(tree)}.db", n, ticks, tree, rng))
                print(f"{n} series, {'entries' if tree else 'old layout'}: fill "
                      f"{r['fill_s']:.0f} s, {r['entries']:,} entries", file=sys.stderr)
                results.append(r)
    rows = []
    for r in results:
        target = IDLE_P95_TARGET_MS.get(r["series"])
        rows.append([
            r["series"], "entries" if r["tree"] else "old (whole checkpoint)", r["ticks"],
            fmt_bytes(r["checkpoint"]), fmt_bytes(r["idle_bytes"]),
            fmt_bytes(r["idle_bytes_max"]), fmt_bytes(r["busy_bytes"]),
            fmt_bytes(r["db"]), f"x{r['db'] / max(1, r['checkpoint']):.1f}",
            r["idle_p50"], r["idle_p95"], r["busy_p50"],
            "—" if target is None else verdict(r["idle_p95"], target, higher_is_better=False)])
    print_table(
        f"Checkpoint writes at full retention, SQLite ({machine()})",
        ["series", "layout", "ticks", "checkpoint", "idle tick writes", "idle max",
         "busy tick writes", "db in use", "db / ckpt", "idle p50 ms", "idle p95 ms",
         "busy p50 ms", "idle p95 meets"],
        rows, plain=args.plain,
        notes=["checkpoint = its row + the entries valid at it (old layout: the row)",
               "tick writes = new checkpoint row + pending writes + entries born with it + "
               "36 B per entry it closed (median over the first 40 ticks)",
               f"busy = one new event in each of {BUSY_SERIES} series before the tick",
               "db in use = (page_count - freelist_count) x page_size after the run, with "
               "retention.checkpoints = 100",
               f"targets: idle tick writes < {fmt_bytes(IDLE_BYTES_TARGET)} and flat in "
               "series; db < 10 x checkpoint; idle p95 < 50 ms (50 series), "
               "< 100 ms (500 series)"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
