"""Fold throughput: how fast ``flush()`` turns inbox rows into the state, on SQLite.

Fills the inbox with N events through the SharedState API (default 200k; ~90 % metrics over
50 series, the rest error occurrences, insights and heartbeats), then times ``flush()`` and
breaks it into phases. Also times the pure ``state.fold.fold_rows`` on the same rows in
memory (no I/O), and a second flush of N more events into the now non-empty state.

    .venv/bin/python bench/fold_throughput.py
    .venv/bin/python bench/fold_throughput.py --events 1M
"""

from __future__ import annotations

import asyncio
import gc
import random
import statistics
import sys
import time
from typing import Any

from _common import (
    AGENTS,
    GcTimer,
    Phase,
    int_list,
    latency,
    machine,
    parser,
    print_table,
    rate,
    series_names,
    sqlite_url,
    temp_dir,
    verdict,
    word,
    wrap_async,
    wrap_sync,
)

import state.folder
from state import PerformanceMetric, SharedState
from state.fold import DeltaBuilder, fold_rows

TARGET = 100_000  # events/s folded
SERIES = series_names()
BLOCK = 1_000


def mix_label(args: Any) -> str:
    return (f"{args.metrics_pct:.0f} % metrics / {args.errors_pct:.0f} % errors / "
            f"{args.insights_pct:.0f} % insights / rest heartbeats")


async def fill(shared: SharedState, n: int, args: Any, rng: random.Random,
               offset: int = 0) -> dict[str, int]:
    """Write ``n`` mixed events through the API, in blocks of 1,000 (metrics batched)."""
    counts = {"metric": 0, "error": 0, "insight": 0, "heartbeat": 0}
    now = time.time()
    spread = args.spread_minutes * 60
    for start in range(offset, offset + n, BLOCK):
        size = min(BLOCK, offset + n - start)
        metrics: list[PerformanceMetric] = []
        others = []
        for i in range(start, start + size):
            r = rng.random() * 100
            if r < args.metrics_pct:
                agent, name = SERIES[i % len(SERIES)]
                metrics.append(PerformanceMetric(source_agent=agent, name=name,
                                                 value=latency(rng), unit="ms",
                                                 timestamp=now - rng.random() * spread))
                counts["metric"] += 1
            elif r < args.metrics_pct + args.errors_pct:
                p = rng.randrange(args.patterns)
                others.append(shared.add_error_pattern(
                    "ValueError", f"cannot parse field {word(p)} in row {i}",
                    AGENTS[p % len(AGENTS)]))
                counts["error"] += 1
            elif r < args.metrics_pct + args.errors_pct + args.insights_pct:
                k = rng.randrange(args.insights)
                others.append(shared.add_insight(
                    "latency_regression", {"key": f"k{k}", "p95_ms": round(latency(rng), 1)},
                    "coordinator", priority=("low", "medium", "high", "critical")[k % 4]))
                counts["insight"] += 1
            else:
                a = rng.randrange(args.agents)
                others.append(shared.update_agent_heartbeat(
                    f"agent{a}", {"status": "running", "processed": i}))
                counts["heartbeat"] += 1
        await asyncio.gather(shared.add_performance_metrics(metrics), *others)
    return counts


async def timed_flush(shared: SharedState) -> tuple[float, int, dict[str, Phase], float]:
    """flush() with its phases timed; returns (seconds, folded, phases, gc seconds)."""
    phases: dict[str, Phase] = {}
    backend = shared.backend
    graph = shared._graph
    originals = {
        (backend, "read_inbox"): backend.read_inbox,
        (backend, "delete_folded"): backend.delete_folded,
        (backend, "quarantine"): backend.quarantine,
        (backend, "prune_checkpoints"): backend.prune_checkpoints,
        (graph, "aget_state"): graph.aget_state,
        (graph, "aupdate_state"): graph.aupdate_state,
        (state.folder, "fold_rows"): state.folder.fold_rows,
        (state.folder, "bounded"): state.folder.bounded,
        (DeltaBuilder, "build"): DeltaBuilder.build,
    }
    wrap_async(graph, "aget_state", phases, "aget_state (load + deserialize checkpoint)")
    wrap_async(backend, "read_inbox", phases, "read_inbox (SELECT rows)")
    wrap_sync(state.folder, "fold_rows", phases, "fold_rows (decode + accumulate)")
    wrap_sync(DeltaBuilder, "build", phases, "DeltaBuilder.build (freeze + roll up tiers)")
    wrap_sync(state.folder, "bounded", phases, "bounded (merge into state + compact)")
    wrap_async(graph, "aupdate_state", phases, "aupdate_state (reducers + write checkpoint)")
    wrap_async(backend, "delete_folded", phases, "delete_folded (DELETE rows)")
    wrap_async(backend, "quarantine", phases, "quarantine")
    wrap_async(backend, "prune_checkpoints", phases, "prune_checkpoints")
    try:
        gc.collect()
        with GcTimer() as g:
            t0 = time.perf_counter()
            report = await shared.flush()
            dt = time.perf_counter() - t0
    finally:
        for (obj, name), fn in originals.items():
            setattr(obj, name, fn)
    return dt, report.folded, phases, g.total


async def run(args: Any) -> None:
    rng = random.Random(args.seed)
    summary: list[list[Any]] = []
    breakdowns: list[tuple[str, float, dict[str, Phase], float]] = []
    with temp_dir(args.dir) as tmp:
        async with SharedState.open(sqlite_url(tmp / "fold.db"), producer="bench-fold") as shared:
            for rnd, label in enumerate(("flush() into an empty state",
                                         "flush() into the state from round 1")):
                t0 = time.perf_counter()
                counts = await fill(shared, args.events, args, rng, offset=rnd * args.events)
                fill_s = time.perf_counter() - t0
                pending = await shared.backend.pending_count()
                if rnd == 0:
                    t0 = time.perf_counter()
                    rows = await shared.backend.read_inbox(pending + 1)
                    read_s = time.perf_counter() - t0
                    summary.append(["read_inbox: SELECT all rows", len(rows), read_s,
                                    rate(len(rows), read_s), None, "", ""])
                    times = []
                    for _ in range(args.repeat):
                        gc.collect()
                        t0 = time.perf_counter()
                        result = fold_rows(rows)
                        times.append(time.perf_counter() - t0)
                    pure = statistics.median(times)
                    summary.append([f"fold_rows in memory (median of {args.repeat})",
                                    result.folded, pure, rate(result.folded, pure), TARGET,
                                    verdict(rate(result.folded, pure), TARGET), ""])
                    del rows, result
                dt, folded, phases, gc_s = await timed_flush(shared)
                r = rate(folded, dt)
                summary.append([f"round {rnd + 1}: {label}", folded, dt, r, TARGET,
                                verdict(r, TARGET), f"{100 * gc_s / dt:.0f} %"])
                breakdowns.append((f"round {rnd + 1}", dt, phases, gc_s))
                if folded != pending:
                    raise RuntimeError(f"folded {folded} of {pending} pending rows")
                print(f"round {rnd + 1}: filled {sum(counts.values()):,} events in "
                      f"{fill_s:.1f} s ({counts}); pending {pending:,}", file=sys.stderr)
            s = await shared.get_system_state()
            series = s["metrics"]["series"]
            patterns = s["error_patterns"]["total"]

    print_table(
        f"Fold throughput, SQLite, N = {args.events:,} per round, {mix_label(args)} "
        f"({machine()})",
        ["what", "events", "seconds", "events/s", "target", "meets", "GC time"],
        summary, plain=args.plain,
        notes=[f"state after both rounds: {series} series, {patterns} error patterns; metric "
               f"timestamps spread over the last {args.spread_minutes} min.",
               f"target: >= {TARGET:,} events/s folded."],
    )
    rows = []
    for label, total, phases, gc_s in breakdowns:
        for name, ph in phases.items():
            if ph.calls:
                rows.append([f"{label}: {name}", ph.calls, ph.seconds,
                             f"{100 * ph.seconds / total:.1f} %"])
        accounted = sum(ph.seconds for ph in phases.values())
        rows.append([f"{label}: other (lock, loop, config)", "", total - accounted,
                     f"{100 * (total - accounted) / total:.1f} %"])
        rows.append([f"{label}: (GC inside the above)", "", gc_s,
                     f"{100 * gc_s / total:.1f} %"])
    print_table("Where flush() spends its time", ["phase", "calls", "seconds", "share"], rows,
                plain=args.plain)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--events", type=lambda s: int_list(s)[0], default=200_000,
                   help="events per round")
    p.add_argument("--metrics-pct", type=float, default=90.0)
    p.add_argument("--errors-pct", type=float, default=4.0)
    p.add_argument("--insights-pct", type=float, default=2.0)
    p.add_argument("--patterns", type=int, default=100, help="distinct error patterns")
    p.add_argument("--insights", type=int, default=200, help="distinct insight keys")
    p.add_argument("--agents", type=int, default=10, help="agents sending heartbeats")
    p.add_argument("--spread-minutes", type=float, default=60.0,
                   help="metric timestamps spread over this many minutes back from now")
    p.add_argument("--repeat", type=int, default=3, help="repeats of the in-memory fold")
    args = p.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
