"""Read latency of the SharedState API on a state at full retention, next to a raw SQLite read.

For 50 and 500 series whose 1 m / 1 h / 1 d buckets are all filled (default retention:
120 / 168 / 30 buckets), ~200 error patterns, ~200 insights and 10 agents, times each read
(median and p95, ms) from a separate read-only handle, as the dashboard reads:

- ``warm``: the same checkpoint as the read before (the handle keeps it decoded; the query
  functions remember window merges by value);
- ``cold: decode``: the handle's cache emptied before each call, so the checkpoint is loaded
  and decoded again (as after a tick), the query functions' memo kept (it checks buckets by
  value, as a new checkpoint with mostly unchanged buckets needs);
- ``new checkpoint``: a real tick first (one new event folded: a new checkpoint, one hot
  bucket changed), then the read;
- ``no cache``: both emptied before each call (what every read cost before this cache);
- ``+10k pending``: 10k unfolded events in the inbox, laid over the checkpoint (read-your-
  writes); ``warm`` with the same inbox, ``new row`` with one more event written before each
  call (the overlay is computed again).

The floor, measured in the same run: one ``SELECT series, ts, value`` of 1,000 raw metric rows
per series (50k / 500k rows) from a plain SQLite table in the same directory.

    .venv/bin/python bench/read_latency.py
    .venv/bin/python bench/read_latency.py --series 50 --calls 100
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import (
    AGENTS,
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
    word,
)

from state import PerformanceMetric, SharedState, queries
from state.compact import compact_metrics
from state.config import RetentionConfig
from state.fold import DeltaBuilder

MINUTE, HOUR, DAY = 60, 3600, 86400
TARGET_MS = {50: 20.0, 500: 100.0}
Read = Callable[[], Awaitable[Any]]


def full_retention_metrics(n_series: int, rng: random.Random, now: float,
                           per_bucket: tuple[int, int, int]) -> dict[str, Any]:
    """The metrics channel of ``n_series`` series with data in every retained bucket of
    every tier, folded and compacted as the fold would (built in process: 3M events through
    the inbox would take minutes)."""
    retention = RetentionConfig()
    k_min, k_hour, k_day = per_bucket
    builder = DeltaBuilder()
    for agent, name in series_names(n_series):
        series = f"{agent}/{name}"
        ages = ([m * MINUTE + rng.random() * MINUTE
                 for m in range(retention.minute_buckets) for _ in range(k_min)]
                + [h * HOUR + rng.random() * HOUR
                   for h in range(retention.hour_buckets) for _ in range(k_hour)]
                + [min(d * DAY + rng.random() * DAY, (retention.day_buckets - 1) * DAY)
                   for d in range(retention.day_buckets) for _ in range(k_day)])
        for age in ages:
            builder.metric(series, latency(rng), now - age, "ms")
    return compact_metrics(builder.build()["metrics"], now, retention)


async def build_state(url: str, n_series: int, args: Any, rng: random.Random) -> None:
    now = time.time()
    async with SharedState.open(url, producer="bench-writer") as writer:
        calls: list[Awaitable[Any]] = []
        for a in range(args.agents):
            calls.append(writer.register_agent(f"agent{a}", kind="worker", interval_s=30))
            calls.append(writer.update_agent_heartbeat(f"agent{a}", {"status": "running"}))
        for p in range(args.patterns):
            for j in range(3):
                calls.append(writer.add_error_pattern(
                    ("ValueError", "TimeoutError", "KeyError")[p % 3],
                    f"cannot handle field {word(p)} for record {j}", AGENTS[p % len(AGENTS)]))
        for i in range(args.insights):
            calls.append(writer.add_insight(
                ("latency_regression", "error_spike", "throughput_drop")[i % 3],
                {"key": f"insight-{i}", "p95_ms": round(latency(rng), 1), "detail": word(i) * 3},
                "coordinator", priority=("low", "medium", "high", "critical")[i % 4]))
        for start in range(0, len(calls), 1_000):
            await asyncio.gather(*calls[start:start + 1_000])
        await writer.flush()
        doc = await writer.export_state()
        metrics = full_retention_metrics(n_series, rng, now,
                                         (args.per_minute, args.per_hour, args.per_day))
        doc["channels"]["metrics"] = queries._keys_to_str(metrics)
        await writer.restore_state(doc, force=True)


def raw_floor(path: Path, rows: int, calls: int, rng: random.Random) -> list[float]:
    """ms per ``SELECT`` of ``rows`` raw metric rows (series, ts, value) from a plain table."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE metric_rows (series TEXT NOT NULL, ts REAL NOT NULL, "
                 "value REAL NOT NULL)")
    names = [f"{a}/{n}" for a, n in series_names(max(1, rows // 1000))]
    now = time.time()
    conn.executemany("INSERT INTO metric_rows VALUES (?, ?, ?)",
                     [(names[i % len(names)], now - rng.random() * 3600, latency(rng))
                      for i in range(rows)])
    conn.commit()
    samples = []
    conn.execute("SELECT series, ts, value FROM metric_rows").fetchall()  # warm the page cache
    for _ in range(calls):
        t0 = time.perf_counter()
        conn.execute("SELECT series, ts, value FROM metric_rows").fetchall()
        samples.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return samples


def reads(reader: SharedState) -> list[tuple[str, Read]]:
    return [
        ("get_performance_summary(hours=1)", lambda: reader.get_performance_summary(hours=1)),
        ("get_performance_summary(hours=24)", lambda: reader.get_performance_summary(hours=24)),
        ("get_performance_summary(hours=168)", lambda: reader.get_performance_summary(hours=168)),
        ("get_error_patterns()", reader.get_error_patterns),
        ("get_insights()", reader.get_insights),
        ("get_system_state()", reader.get_system_state),
    ]


async def timed(fn: Read, calls: int, before: Callable[[], Awaitable[None]] | None = None
                ) -> list[float]:
    samples = []
    for _ in range(calls):
        if before is not None:
            await before()
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def measure(url: str, n_series: int, args: Any, floor: list[float],
                  rng: random.Random) -> list[list[Any]]:
    target = TARGET_MS.get(n_series, 100.0)
    floor_med = median(floor)
    rows: list[list[Any]] = []

    def row(scenario: str, label: str, samples: list[float]) -> None:
        p95 = percentile(samples, 95)
        rows.append([n_series, scenario, label, median(samples), p95, floor_med,
                     "yes" if p95 < target else "MISS",
                     "yes" if p95 < floor_med else "no"])

    async with SharedState.open(url, producer="bench-writer") as writer, \
            SharedState.open(url, producer="bench-reader", read_only=True) as reader:
        series = [f"{a}/{n}" for a, n in series_names(n_series)]

        async def forget_checkpoint() -> None:
            reader._read_cache.clear()

        async def forget_all() -> None:
            reader._read_cache.clear()
            queries.forget()

        async def tick() -> None:  # one new event folded: a new checkpoint
            await writer.add_performance_metric(PerformanceMetric(
                source_agent=series[0].split("/")[0], name=series[0].split("/", 1)[1],
                value=latency(rng), unit="ms"))
            await writer.flush()

        async def new_row() -> None:
            s = rng.choice(series)
            await writer.add_performance_metric(PerformanceMetric(
                source_agent=s.split("/")[0], name=s.split("/", 1)[1], value=latency(rng),
                unit="ms"))

        for label, fn in reads(reader):
            await fn()
            row("warm", label, await timed(fn, args.calls))
            row("cold: decode", label, await timed(fn, args.cold_calls, forget_checkpoint))
            row("new checkpoint", label, await timed(fn, args.ticks, tick))
            row("no cache", label, await timed(fn, args.cold_calls, forget_all))
        if args.pending:
            now = time.time()
            extra = [PerformanceMetric(source_agent=s.split("/")[0], name=s.split("/", 1)[1],
                                       value=latency(rng), unit="ms",
                                       timestamp=now - rng.random() * 600)
                     for i in range(args.pending) for s in (series[i % len(series)],)]
            for start in range(0, len(extra), 10_000):
                await writer.add_performance_metrics(extra[start:start + 10_000])
            label_p = f"+{args.pending // 1000}k pending"
            for label, fn in reads(reader):
                await fn()
                row(f"{label_p}, warm", label, await timed(fn, args.calls))
                row(f"{label_p}, new row", label, await timed(fn, args.cold_calls, new_row))
            print(f"{n_series} series: pending rows seen by the reader: {reader.pending:,}",
                  file=sys.stderr)
    return rows


async def run(args: Any) -> None:
    rng = random.Random(args.seed)
    table: list[list[Any]] = []
    notes = []
    with temp_dir(args.dir) as tmp:
        for n_series in args.series:
            url = sqlite_url(tmp / f"read-{n_series}.db")
            t0 = time.perf_counter()
            await build_state(url, n_series, args, rng)
            size = (tmp / f"read-{n_series}.db").stat().st_size
            print(f"{n_series} series: built in {time.perf_counter() - t0:.1f} s, "
                  f"database {size / 1e6:.1f} MB", file=sys.stderr)
            floor = raw_floor(tmp / f"raw-{n_series}.db", n_series * 1000, args.floor_calls,
                              rng)
            notes.append(f"{n_series} series: raw SQLite SELECT of {n_series * 1000:,} rows: "
                         f"median {median(floor):.1f} ms, p95 {percentile(floor, 95):.1f} ms")
            table += await measure(url, n_series, args, floor, rng)
    targets = ", ".join(f"{k} series < {v:.0f} ms" for k, v in TARGET_MS.items())
    print_table(
        f"Read latency, SQLite, full retention, ms ({machine()})",
        ["series", "state", "read", "median ms", "p95 ms", "raw SELECT ms", "p95 < target",
         "p95 < raw"],
        table, plain=args.plain,
        notes=[*notes, f"targets (p95): {targets}; calls: warm {args.calls}, cold / no cache / "
                       f"new row {args.cold_calls}, new checkpoint {args.ticks}; reads from a "
                       "read-only SharedState"],
    )


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--series", type=int_list, default=[50, 500], help="series counts")
    p.add_argument("--calls", type=int, default=50, help="timed warm calls per read")
    p.add_argument("--cold-calls", type=int, default=10,
                   help="timed calls per read when each pays a decode or an overlay")
    p.add_argument("--ticks", type=int, default=3,
                   help="timed calls per read, each after a real tick (new checkpoint)")
    p.add_argument("--floor-calls", type=int, default=20, help="timed raw SELECTs")
    p.add_argument("--pending", type=int, default=10_000,
                   help="unfolded rows for the overlay scenario (0: skip)")
    p.add_argument("--per-minute", type=int, default=10, help="events per 1 m bucket")
    p.add_argument("--per-hour", type=int, default=20, help="events per 1 h bucket")
    p.add_argument("--per-day", type=int, default=50, help="events per 1 d bucket")
    p.add_argument("--patterns", type=int, default=200, help="distinct error patterns")
    p.add_argument("--insights", type=int, default=200, help="distinct insights")
    p.add_argument("--agents", type=int, default=10)
    args = p.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
