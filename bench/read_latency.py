"""Read latency of the SharedState API on a state at full retention, on SQLite.

Builds a state with 50 series whose 1 m / 1 h / 1 d buckets are all filled (default retention:
120 / 168 / 30), ~200 error patterns, ~200 insights and 10 agents, folds it, then times each
read (median and p95 of 50 calls, ms) from a separate read-only handle, as the dashboard reads.
Then writes 10k more events without folding them and times the same reads again: every read
lays the unfolded rows over the checkpoint (read-your-writes), which is the overlay cost.

    .venv/bin/python bench/read_latency.py
    .venv/bin/python bench/read_latency.py --calls 200 --pending 50000
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import (
    AGENTS,
    GcTimer,
    Phase,
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
    wrap_async,
    wrap_sync,
)

import state.api
from state import PerformanceMetric, SharedState

TARGET_MS = 50.0
SERIES = series_names()
MINUTE, HOUR, DAY = 60, 3600, 86400


def full_retention_metrics(rng: random.Random, now: float, per_bucket: tuple[int, int, int],
                           minutes: int = 120, hours: int = 168,
                           days: int = 30) -> list[PerformanceMetric]:
    """Events that put data into every retained bucket of every tier of every series."""
    out = []
    k_min, k_hour, k_day = per_bucket
    for agent, name in SERIES:
        ages = ([m * MINUTE + rng.random() * MINUTE for m in range(minutes) for _ in range(k_min)]
                + [h * HOUR + rng.random() * HOUR for h in range(hours) for _ in range(k_hour)]
                + [min(d * DAY + rng.random() * DAY, (days - 1) * DAY)
                   for d in range(days) for _ in range(k_day)])
        for age in ages:
            out.append(PerformanceMetric(source_agent=agent, name=name, value=latency(rng),
                                         unit="ms", timestamp=now - age))
    return out


async def build_state(shared: SharedState, args: Any, rng: random.Random) -> dict[str, int]:
    now = time.time()
    metrics = full_retention_metrics(rng, now, (args.per_minute, args.per_hour, args.per_day))
    for start in range(0, len(metrics), 10_000):
        await shared.add_performance_metrics(metrics[start:start + 10_000])
    calls: list[Awaitable[Any]] = []
    for a in range(args.agents):
        calls.append(shared.register_agent(f"agent{a}", kind="worker", interval_s=30))
        calls.append(shared.update_agent_heartbeat(f"agent{a}", {"status": "running"}))
    for p in range(args.patterns):
        for j in range(3):
            calls.append(shared.add_error_pattern(
                ("ValueError", "TimeoutError", "KeyError")[p % 3],
                f"cannot handle field {word(p)} for record {j}", AGENTS[p % len(AGENTS)]))
    for i in range(args.insights):
        calls.append(shared.add_insight(
            ("latency_regression", "error_spike", "throughput_drop")[i % 3],
            {"key": f"insight-{i}", "p95_ms": round(latency(rng), 1), "detail": word(i) * 3},
            "coordinator", priority=("low", "medium", "high", "critical")[i % 4]))
    for start in range(0, len(calls), 1_000):
        await asyncio.gather(*calls[start:start + 1_000])
    report = await shared.flush()
    return {"metric events": len(metrics), "events folded": report.folded}


def reads(reader: SharedState) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    return [
        ("get_performance_summary(hours=1)", lambda: reader.get_performance_summary(hours=1)),
        ("get_performance_summary(hours=24)", lambda: reader.get_performance_summary(hours=24)),
        ("get_performance_summary(hours=168)", lambda: reader.get_performance_summary(hours=168)),
        ("get_error_patterns()", reader.get_error_patterns),
        ("get_system_state()", reader.get_system_state),
        ("get_insights()", reader.get_insights),
    ]


def instrument(reader: SharedState, phases: dict[str, Phase]) -> Callable[[], None]:
    """Time the parts of ``read()`` that exist in this version; returns an undo function."""
    backend = reader.backend
    parts = [
        (backend, "latest_checkpoint_id", "latest_checkpoint_id (SELECT)"),
        (backend.checkpointer, "aget_tuple", "checkpointer.aget_tuple (load + deserialize)"),
        (backend, "read_inbox", "read_inbox (unfolded rows)"),
        (state.api, "pending_delta", "pending_delta (read + fold unfolded rows)"),
        (state.api, "overlay", "overlay (fold unfolded rows onto state)"),
        (state.api, "apply_update", "apply_update (merge delta into state)"),
    ]
    saved = []
    for obj, name, label in parts:
        fn = getattr(obj, name, None)
        if fn is None:
            continue
        saved.append((obj, name, fn))
        wrap = wrap_async if inspect.iscoroutinefunction(fn) else wrap_sync
        wrap(obj, name, phases, label)

    def undo() -> None:
        for obj, name, fn in saved:
            setattr(obj, name, fn)

    return undo


async def time_reads(reader: SharedState, calls: int, scenario: str,
                     breakdown: list[list[Any]]) -> list[list[Any]]:
    rows = []
    for label, fn in reads(reader):
        await fn()  # warm: first call pays one-off costs (imports, statement cache)
        phases: dict[str, Phase] = {}
        undo = instrument(reader, phases)
        samples = []
        try:
            gc.collect()
            with GcTimer() as g:
                for _ in range(calls):
                    t0 = time.perf_counter()
                    await fn()
                    samples.append((time.perf_counter() - t0) * 1000)
        finally:
            undo()
        p95 = percentile(samples, 95)
        rows.append([scenario, label, median(samples), p95, max(samples), TARGET_MS,
                     "yes" if p95 < TARGET_MS else "MISS",
                     f"{100 * g.total / (sum(samples) / 1000):.0f} %"])
        total_ms = sum(samples)
        accounted = 0.0
        nested = any(name.startswith("pending_delta") for name in phases)
        for name, ph in phases.items():
            inner = nested and name.startswith("read_inbox")  # runs inside pending_delta
            if not inner:
                accounted += ph.seconds * 1000
            breakdown.append([scenario, label, f"  ({name})" if inner else name,
                              ph.seconds * 1000 / calls,
                              f"{100 * ph.seconds * 1000 / total_ms:.0f} %"])
        rest = total_ms - accounted
        breakdown.append([scenario, label, "query function + rest", rest / calls,
                          f"{100 * rest / total_ms:.0f} %"])
    return rows


async def run(args: Any) -> None:
    rng = random.Random(args.seed)
    table: list[list[Any]] = []
    breakdown: list[list[Any]] = []
    with temp_dir(args.dir) as tmp:
        url = sqlite_url(tmp / "read.db")
        async with SharedState.open(url, producer="bench-writer") as writer:
            t0 = time.perf_counter()
            built = await build_state(writer, args, rng)
            print(f"built state in {time.perf_counter() - t0:.1f} s: {built}", file=sys.stderr)
            async with SharedState.open(url, producer="bench-reader", read_only=True) as reader:
                info = await reader.get_system_state()
                st = await reader.read()
                buckets = {t: sum(len(d["tiers"].get(t, {})) for d in st["metrics"].values())
                           for t in ("1m", "1h", "1d")}
                shape = (f"{info['metrics']['series']} series, buckets 1m/1h/1d = "
                         f"{buckets['1m']:,}/{buckets['1h']:,}/{buckets['1d']:,}, "
                         f"{info['error_patterns']['total']} error patterns, "
                         f"{info['insights']['total']} insights, "
                         f"{info['agents']['registered']} agents")
                print(shape, file=sys.stderr)
                table += await time_reads(reader, args.calls, "folded", breakdown)
                if args.pending:
                    now = time.time()
                    extra = [PerformanceMetric(source_agent=a, name=n, value=latency(rng),
                                               unit="ms", timestamp=now - rng.random() * 600)
                             for i in range(args.pending)
                             for a, n in (SERIES[i % len(SERIES)],)]
                    for start in range(0, len(extra), 10_000):
                        await writer.add_performance_metrics(extra[start:start + 10_000])
                    label = f"+{args.pending // 1000}k unfolded"
                    table += await time_reads(reader, args.calls, label, breakdown)
                    pending = (await reader.get_system_state())["inbox"]["pending"]
                    print(f"pending rows seen by the reader: {pending:,}", file=sys.stderr)

    print_table(
        f"Read latency, SQLite, {args.calls} calls each, ms ({machine()})",
        ["state", "read", "median ms", "p95 ms", "max ms", "target", "p95 ok", "GC time"],
        table, plain=args.plain,
        notes=[shape, f"target: < {TARGET_MS:.0f} ms; reads come from a separate read-only "
                      "SharedState (as the dashboard reads)."],
    )
    print_table("Where a read spends its time (mean ms per call)",
                ["state", "read", "part", "ms/call", "share"], breakdown, plain=args.plain)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=50, help="timed calls per read")
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
