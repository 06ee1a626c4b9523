"""Scale-out: write throughput with 1, 4, 16 producer processes, and fold throughput, on
PostgreSQL next to SQLite in one run (issue 7).

Writes: each producer is its own OS process with its own ``SharedState``; all connect and write
a warm-up event, then start together behind a barrier and each make ``--events-per-producer``
single ``add_performance_metric`` calls, ``--chunk`` in flight at a time (the form of row (d) of
``write_throughput.py``; metrics round-robin over 50 series). Aggregate events/s = all
acknowledged events / wall time from the common start to the last producer's finish; a call
counts once it returned (its rows are committed).

Folds: ``--fold-events`` mixed events (as ``fold_throughput.py``) written through the API from
one process, then one ``SharedState.flush()`` timed (events folded / s), with its phases.

Every run gets a fresh database: a new ``bga_b_<hex>`` schema on the PostgreSQL server (dropped
afterwards) or a new SQLite file. Without a reachable server only SQLite is measured.

    .venv/bin/python bench/scale_out.py
    .venv/bin/python bench/scale_out.py --producers 1,4,16,32 --events-per-producer 50k
    BGA_BENCH_POSTGRES_URL=postgresql://user@db:5432/bench .venv/bin/python bench/scale_out.py
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

from _common import (
    BACKEND_LABEL,
    Phase,
    add_mix_options,
    add_pg_option,
    backends,
    fill,
    fresh_db,
    inbox_rows,
    int_list,
    machine,
    mix_label,
    parser,
    phase_rows,
    print_table,
    rate,
    run_producers,
    temp_dir,
    timed_flush,
    verdict,
)

from state import SharedState
from state.redact import redact

WRITE_TARGET = 30_000  # events/s aggregate, 16 producers, PostgreSQL
WRITE_TARGET_PRODUCERS = 16
FOLD_TARGET = 100_000  # events/s folded (fold_throughput.py's target)


def write_runs(args: Any, kinds: list[str], tmp: Path) -> list[list[Any]]:
    results: dict[tuple[str, int], list[Any]] = {}
    for procs in args.producers:  # interleaved, so both backends see similar background load
        for kind in kinds:
            with fresh_db(kind, tmp, args.pg_url, f"write-{procs}") as url:
                run = run_producers(url, procs, args.events_per_producer, args.chunk)
                stored = asyncio.run(inbox_rows(url)) - procs  # less one warm-up event each
            r = rate(run.events, run.seconds)
            target = (WRITE_TARGET if kind == "postgresql" and procs == WRITE_TARGET_PRODUCERS
                      else None)
            results[kind, procs] = [
                BACKEND_LABEL[kind], procs, run.events, run.seconds, r,
                rate(args.events_per_producer, run.slowest), target,
                verdict(r, target) if target else "",
                f"{stored:,} rows in inbox" + ("" if stored == run.events else " (LOST ROWS)")]
            print(f"{BACKEND_LABEL[kind]}, {procs} producers: {r:,.0f} events/s", file=sys.stderr)
    return [results[kind, procs] for kind in kinds for procs in args.producers]


async def fold_run(kind: str, url: str, args: Any) -> tuple[list[Any], float, dict[str, Phase],
                                                            float]:
    rng = random.Random(args.seed)
    async with SharedState.open(url, producer="bench-fold") as shared:
        t0 = time.perf_counter()
        await fill(shared, args.fold_events, args, rng)
        fill_s = time.perf_counter() - t0
        pending = await shared.backend.pending_count()
        dt, folded, phases, gc_s = await timed_flush(shared)
        left = await shared.backend.pending_count()
    if folded != pending or left:
        raise RuntimeError(f"{BACKEND_LABEL[kind]}: folded {folded:,} of {pending:,} pending "
                           f"rows, {left:,} left")
    r = rate(folded, dt)
    print(f"{BACKEND_LABEL[kind]}: filled {pending:,} events in {fill_s:.1f} s, folded at "
          f"{r:,.0f} events/s", file=sys.stderr)
    row = [BACKEND_LABEL[kind], folded, dt, r, FOLD_TARGET, verdict(r, FOLD_TARGET),
           f"{100 * gc_s / dt:.0f} %", rate(pending, fill_s)]
    return row, dt, phases, gc_s


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    add_pg_option(p)
    p.add_argument("--producers", type=int_list, default=[1, 4, 16],
                   help="producer process counts, comma-separated")
    p.add_argument("--events-per-producer", type=lambda s: int_list(s)[0], default=25_000,
                   help="events each producer writes")
    p.add_argument("--chunk", type=int, default=1_000, help="calls in flight per producer")
    p.add_argument("--fold-events", type=lambda s: int_list(s)[0], default=200_000,
                   help="events written, then folded by one flush() (0 skips the fold runs)")
    add_mix_options(p)
    args = p.parse_args(argv)

    kinds = backends(args.pg_url)
    where = redact(args.pg_url) if "postgresql" in kinds else "unreachable"
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    with temp_dir(args.dir) as tmp:
        writes = write_runs(args, kinds, tmp)
        folds = []
        breakdowns = []
        if args.fold_events > 0:
            for kind in kinds:
                with fresh_db(kind, tmp, args.pg_url, "fold") as url:
                    row, dt, phases, gc_s = asyncio.run(fold_run(kind, url, args))
                folds.append(row)
                breakdowns.append((BACKEND_LABEL[kind], dt, phases, gc_s))
    after = Path("/proc/loadavg").read_text().split()[:3] if load else []

    print_table(
        f"Scale-out writes: producer processes on one state ({machine()})",
        ["backend", "producers", "events", "seconds", "events/s", "per producer/s", "target",
         "meets", "check"],
        writes, plain=args.plain,
        notes=[f"each producer: {args.events_per_producer:,} single add_performance_metric "
               f"calls, {args.chunk:,} in flight (gather), own process and SharedState; "
               "events/s = all events / (last finish - common start).",
               "per producer/s: events of one producer / seconds of the slowest one.",
               f"target: >= {WRITE_TARGET:,} events/s aggregate with {WRITE_TARGET_PRODUCERS} "
               "producers on PostgreSQL.",
               f"PostgreSQL: {where}; SQLite: a file in a temp dir (WAL).",
               f"load average (1/5/15 min) before: {' '.join(load)}, after: {' '.join(after)} "
               "(after includes this benchmark's own processes)."],
    )
    if folds:
        print_table(
            f"Scale-out folds: one flush() of N = {args.fold_events:,} events, "
            f"{mix_label(args)}",
            ["backend", "events", "seconds", "events/s", "target", "meets", "GC time",
             "fill events/s"],
            folds, plain=args.plain,
            notes=[f"target: >= {FOLD_TARGET:,} events/s folded; fill: the same events "
                   "written through the API from one process beforehand (blocks of 1,000)."],
        )
        rows = []
        for label, total, phases, gc_s in breakdowns:
            rows.extend(phase_rows(label, total, phases, gc_s))
        print_table("Where flush() spends its time", ["phase", "calls", "seconds", "share"],
                    rows, plain=args.plain)


if __name__ == "__main__":
    main()
