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
    Phase,
    add_mix_options,
    fill,
    int_list,
    machine,
    mix_label,
    parser,
    phase_rows,
    print_table,
    rate,
    sqlite_url,
    temp_dir,
    timed_flush,
    verdict,
)

from state import SharedState
from state.fold import fold_rows

TARGET = 100_000  # events/s folded


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
    phase_table = []
    for label, total, phases, gc_s in breakdowns:
        phase_table.extend(phase_rows(label, total, phases, gc_s))
    print_table("Where flush() spends its time", ["phase", "calls", "seconds", "share"],
                phase_table, plain=args.plain)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--events", type=lambda s: int_list(s)[0], default=200_000,
                   help="events per round")
    add_mix_options(p)
    p.add_argument("--repeat", type=int, default=3, help="repeats of the in-memory fold")
    args = p.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
