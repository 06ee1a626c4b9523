"""Write throughput of the SharedState API on SQLite, next to its peers, in one run.

Rows:
  (a) one ``await add_performance_metric`` at a time
  (b) one process, many concurrent calls (``asyncio.gather`` over chunks of calls)
  (c) the batch form ``add_performance_metrics(list)``
  (d) 4 OS processes doing (b) at once on one database (aggregate)
  (e) the naive LangGraph design: a ``StateGraph`` with ``metrics: Annotated[list, operator.add]``
      on ``SqliteSaver``, one ``graph.update_state`` per event (and the same with a tiny state)
  (f) raw SQLite ``executemany`` of the same rows, and one commit per row (the floors)
  (g) on PostgreSQL: (a), (b) and its raw floors (``executemany`` and ``COPY`` in one
      transaction, one autocommit ``INSERT`` per row), on a fresh schema
  (ref) a gather of coroutines: the same ``gather`` over coroutine calls that each only
      await a future that a "writer" resolves in bulk (no validation, no database): what
      calls in flight would cost if each were a coroutine, as the API's writes were before
      they returned futures (``gather`` wraps each coroutine in a task, not a future)

A last table sets ours next to the floors: calls in flight against raw ``executemany``
(SQLite) or ``COPY`` (PostgreSQL) committing as many rows a transaction as are in flight
(target: within 5x), and one await at a time against one commit per row (within 2x). Both
sides start from data in memory: the floors from the rows' tuples, ours from the metrics as
dicts, which each call validates, encodes, queues and commits (``(b) ... made beforehand``);
the floors of all rows in one transaction are shown next to them. These pairs are measured
``--rounds`` times, each of ours right before its floor, and compared by the median of the
rounds' ratios: the machine's speed drifts within seconds here, and one run of each compares
two moments.

Other API rows include building and validating each ``PerformanceMetric`` (the caller's
cost) in the timed loop. Every API figure counts an event only once its call returned, i.e.
once it is committed.

    .venv/bin/python bench/write_throughput.py            # defaults finish in ~3 minutes
    .venv/bin/python bench/write_throughput.py --pg-url postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/write_throughput.py --concurrent 200000 --chunks 1000,10000,50000
"""

from __future__ import annotations

import asyncio
import gc
import operator
import random
import sqlite3
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import orjson
from _common import (
    SERIES,
    GcTimer,
    add_pg_option,
    backends,
    db_files,
    fmt_bytes,
    gather_chunks,
    inbox_rows,
    int_list,
    machine,
    metric,
    parser,
    postgres_schema,
    print_table,
    rate,
    run_producers,
    sqlite_url,
    temp_dir,
    verdict,
    warm,
)
from langchain_core.runnables import RunnableConfig

from state import SharedState
from state.redact import redact

TARGET = 50_000  # events/s through the API from one process


class Row:
    """One line of the result table."""

    def __init__(self, mode: str, events: int, seconds: float, *, target: float | None = None,
                 gc_s: float | None = None, note: str = "") -> None:
        self.mode, self.events, self.seconds = mode, events, seconds
        self.target, self.gc_s, self.note = target, gc_s, note

    def cells(self) -> list[Any]:
        r = rate(self.events, self.seconds)
        return [self.mode, self.events, round(self.seconds, 3), r,
                self.target, verdict(r, self.target) if self.target else "",
                f"{100 * self.gc_s / self.seconds:.0f} %" if self.gc_s is not None else "",
                self.note]


# -- (a) (b) (c): one process through the API ---------------------------------------------------


async def api_sequential(url: str, n: int, label: str = "") -> Row:
    async with SharedState.open(url, producer="bench-seq") as shared:
        await warm(shared)
        gc.collect()
        with GcTimer() as g:
            t0 = time.perf_counter()
            for i in range(n):
                await shared.add_performance_metric(metric(i))
            dt = time.perf_counter() - t0
    return Row(f"{label}(a) sequential: one await at a time", n, dt,
               target=None if label else TARGET, gc_s=g.total, note="one group commit per event")


def metric_dicts(n: int) -> list[dict[str, Any]]:
    """The metrics of ``metric(i)`` as the plain dicts a caller may hold."""
    out = []
    for i in range(n):
        agent, name = SERIES[i % len(SERIES)]
        out.append({"source_agent": agent, "name": name, "value": (i % 1000) + 0.5,
                    "unit": "ms"})
    return out


async def api_concurrent(url: str, n: int, chunk: int, *, freeze: bool = False,
                         label: str = "", beforehand: bool = False) -> Row:
    async with SharedState.open(url, producer="bench-gather") as shared:
        await warm(shared)
        made = metric_dicts(n) if beforehand else []
        add = shared.add_performance_metric
        gc.collect()
        if freeze:  # move everything allocated so far out of the collector's sight
            gc.freeze()
        try:
            with GcTimer() as g:
                t0 = time.perf_counter()
                if beforehand:
                    for start in range(0, n, chunk):
                        await asyncio.gather(*(add(m) for m in made[start:start + chunk]))
                else:
                    await gather_chunks(shared, n, chunk)
                dt = time.perf_counter() - t0
        finally:
            if freeze:
                gc.unfreeze()
        pending = await shared.backend.pending_count()
    mode = f"{label}(b) concurrent: gather, {chunk:,} calls in flight"
    if beforehand:
        mode = f"{label}(b) {chunk:,} in flight, metrics made beforehand (dicts)"
    if freeze:
        mode = f"(b) same, {chunk:,} in flight, app called gc.freeze()"
    return Row(mode, n, dt, target=None if label else TARGET, gc_s=g.total,
               note=f"{pending - 1:,} rows in inbox")


async def asyncio_floor(n: int, chunk: int) -> Row:
    """``gather`` of ``chunk`` calls at a time, each awaiting a future that a writer task
    resolves in bulk once per loop turn: the cost of calls in flight with nothing written."""
    loop = asyncio.get_running_loop()
    waiting: list[asyncio.Future[None]] = []

    async def call(_: int) -> None:
        future = loop.create_future()
        waiting.append(future)
        await future

    async def writer() -> None:
        while True:
            await asyncio.sleep(0)
            done = waiting[:]
            waiting.clear()
            for future in done:
                future.set_result(None)

    task = asyncio.create_task(writer())
    gc.collect()
    with GcTimer() as g:
        t0 = time.perf_counter()
        for start in range(0, n, chunk):
            await asyncio.gather(*(call(i) for i in range(start, min(start + chunk, n))))
        dt = time.perf_counter() - t0
    task.cancel()
    return Row(f"(ref) gather of coroutines: {chunk:,} in flight, nothing written", n, dt,
               gc_s=g.total, note="each call awaits one future, resolved in bulk")


async def api_batch(url: str, n: int, size: int) -> Row:
    async with SharedState.open(url, producer="bench-batch") as shared:
        await warm(shared)
        gc.collect()
        with GcTimer() as g:
            t0 = time.perf_counter()
            for start in range(0, n, size):
                await shared.add_performance_metrics(
                    [metric(i) for i in range(start, min(start + size, n))])
            dt = time.perf_counter() - t0
        pending = await shared.backend.pending_count()
    return Row(f"(c) batch: add_performance_metrics, {size:,} per call", n, dt, target=TARGET,
               gc_s=g.total, note=f"{pending - 1:,} rows in inbox")


def validation_only(n: int) -> Row:
    t0 = time.perf_counter()
    for i in range(n):
        metric(i)
    dt = time.perf_counter() - t0
    return Row("(ref) PerformanceMetric(...) only, no write", n, dt,
               note="validation cost inside (a)-(d)")


# -- (d): several OS processes on one database --------------------------------------------------


def api_processes(url: str, procs: int, n: int, chunk: int) -> list[Row]:
    run = run_producers(url, procs, n, chunk)
    stored = asyncio.run(inbox_rows(url)) - procs  # less one warm-up event each
    return [
        Row(f"(d) {procs} processes x (b), aggregate", run.events, run.seconds,
            note=f"{stored:,} rows in inbox (expected {run.events:,})"),
        Row("    per process (slowest)", n, run.slowest, note=f"{chunk:,} calls in flight each"),
    ]


# -- (e): the naive LangGraph design ------------------------------------------------------------


class NaiveListState(TypedDict):
    metrics: Annotated[list, operator.add]


class NaiveCounterState(TypedDict):
    count: Annotated[int, operator.add]


def naive_langgraph(path: Path, n: int, *, tiny: bool) -> Row:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    schema = NaiveCounterState if tiny else NaiveListState
    builder = StateGraph(schema)
    builder.add_node("record", lambda state: {})
    builder.add_edge(START, "record")
    builder.add_edge("record", END)
    config: RunnableConfig = {"configurable": {"thread_id": "system"}}
    tenth = max(1, n // 10)
    marks: list[float] = []
    with SqliteSaver.from_conn_string(str(path)) as saver:
        graph = builder.compile(checkpointer=saver)
        t0 = time.perf_counter()
        for i in range(n):
            if i % tenth == 0:
                marks.append(time.perf_counter())
            if tiny:
                graph.update_state(config, {"count": 1}, as_node="record")
            else:
                event = metric(i).model_dump()
                event["timestamp"] = time.time()
                graph.update_state(config, {"metrics": [event]}, as_node="record")
        dt = time.perf_counter() - t0
        marks.append(time.perf_counter())
        final = graph.get_state(config).values
    kept = final["count"] if tiny else len(final["metrics"])
    first = rate(tenth, marks[1] - marks[0])
    last = rate(n - tenth * (len(marks) - 2), marks[-1] - marks[-2])
    size = sum(db_files(path).values())
    mode = ("(e') naive LangGraph, tiny state (int counter)" if tiny
            else "(e) naive LangGraph: list channel + SqliteSaver")
    return Row(mode, n, dt, note=f"first 10 %: {first:,.0f}/s, last 10 %: {last:,.0f}/s; "
                                 f"db {fmt_bytes(size)}; state holds {kept:,}")


# -- (f): raw SQLite ----------------------------------------------------------------------------


def _raw_rows(n: int) -> list[tuple[int, int, str, bytes]]:
    now = time.time()
    rows = []
    for i in range(n):
        agent, name = SERIES[i % len(SERIES)]
        payload = {"s": f"{agent}/{name}", "v": (i % 1000) + 0.5, "t": now, "u": "ms"}
        rows.append((1, i + 1, "metric", orjson.dumps(payload)))
    return rows


def _raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


INBOX_DDL = ("CREATE TABLE {name} (stream_id INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT "
             "NOT NULL, payload BLOB NOT NULL, PRIMARY KEY (stream_id, seq)) WITHOUT ROWID")


def raw_sqlite_one_transaction(path: Path, n: int) -> list[Row]:
    """The rows in one transaction: into a plain table and into an inbox-shaped one."""
    rows = _raw_rows(n)
    conn = _raw_connect(path)
    out = []
    tables = (
        ("plain", "CREATE TABLE plain (stream_id INTEGER, seq INTEGER, kind TEXT, payload BLOB)"),
        ("inbox", INBOX_DDL.format(name="inbox")),
    )
    for name, ddl in tables:
        conn.execute(ddl)
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO {name} VALUES (?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        dt = time.perf_counter() - t0
        label = ("(f) raw SQLite executemany, plain table" if name == "plain"
                 else "(f') raw executemany, inbox-shaped table")
        out.append(Row(label, n, dt, note="one transaction, WAL, synchronous=NORMAL"))
    conn.close()
    return out


def raw_sqlite_chunked(path: Path, n: int, chunk: int) -> Row:
    """The floor of ``chunk`` calls in flight: ``executemany`` of ``chunk`` rows a
    transaction into an inbox-shaped table (each commit is what a gather of that many waits
    for)."""
    rows = _raw_rows(n)
    conn = _raw_connect(path)
    conn.execute(INBOX_DDL.format(name="inbox"))
    t0 = time.perf_counter()
    for start in range(0, len(rows), chunk):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO inbox VALUES (?, ?, ?, ?)", rows[start:start + chunk])
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return Row(f"(f) raw executemany, inbox-shaped, {chunk:,} rows a transaction", len(rows), dt,
               note="WAL, synchronous=NORMAL")


def raw_sqlite_per_row(path: Path, n: int) -> list[Row]:
    """One autocommit ``INSERT`` per row, with ``synchronous=NORMAL`` and (a tenth) FULL."""
    rows = _raw_rows(n)
    conn = _raw_connect(path)
    conn.execute("CREATE TABLE per_row (stream_id INTEGER, seq INTEGER, kind TEXT, payload BLOB)")
    t0 = time.perf_counter()
    for row in rows:
        conn.execute("INSERT INTO per_row VALUES (?, ?, ?, ?)", row)  # autocommit: 1 tx per row
    out = [Row("(f'') raw SQLite, one commit per row", n, time.perf_counter() - t0,
               note="WAL, synchronous=NORMAL")]
    conn.execute("PRAGMA synchronous=FULL")  # what surviving a power loss would cost
    t0 = time.perf_counter()
    for row in rows[:n // 10]:
        conn.execute("INSERT INTO per_row VALUES (?, ?, ?, ?)", row)
    out.append(Row("(ref) raw SQLite, one commit per row, synchronous=FULL", n // 10,
                   time.perf_counter() - t0, note="an fsync per commit: survives power loss"))
    conn.close()
    return out


# -- (g): PostgreSQL ----------------------------------------------------------------------------

PG_TABLE = ("CREATE TABLE {name} (stream_id BIGINT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT "
            "NULL, payload BYTEA NOT NULL, PRIMARY KEY (stream_id, seq))")


def raw_postgres(url: str, what: str, n: int, chunk: int = 0) -> list[Row]:
    """The floors on PostgreSQL, into inbox-shaped tables: ``what`` is ``per_row`` (one
    autocommit ``INSERT`` a row), ``chunked`` (``COPY`` of ``chunk`` rows a transaction) or
    ``one`` (all rows in one transaction, by ``executemany`` and by ``COPY``)."""
    import psycopg

    rows = _raw_rows(n)
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        if what == "per_row":
            conn.execute(PG_TABLE.format(name="raw_per_row"))
            t0 = time.perf_counter()
            for row in rows:
                conn.execute("INSERT INTO raw_per_row VALUES (%s, %s, %s, %s)", row)
            out.append(Row("(g) raw PostgreSQL, one commit per row", n,
                           time.perf_counter() - t0, note="autocommit INSERT, server defaults"))
        elif what == "chunked":
            conn.execute(PG_TABLE.format(name="raw_chunked"))
            t0 = time.perf_counter()
            for start in range(0, n, chunk):
                with conn.transaction(), conn.cursor() as cur, \
                        cur.copy("COPY raw_chunked FROM STDIN") as copy:
                    for row in rows[start:start + chunk]:
                        copy.write_row(row)
            out.append(Row(f"(g) raw PostgreSQL COPY, {chunk:,} rows a transaction", n,
                           time.perf_counter() - t0, note="a commit per gather's worth"))
        else:
            for name in ("raw_many", "raw_copy"):
                conn.execute(PG_TABLE.format(name=name))
            t0 = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany("INSERT INTO raw_many VALUES (%s, %s, %s, %s)", rows)
            out.append(Row("(g) raw PostgreSQL executemany, one transaction", n,
                           time.perf_counter() - t0, note="inbox-shaped table"))
            t0 = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur, \
                    cur.copy("COPY raw_copy FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            out.append(Row("(g) raw PostgreSQL COPY, one transaction", n,
                           time.perf_counter() - t0, note="what our append uses for a batch"))
    return out


def one_round(tmp: Path, r: int, args: Any, postgres: bool) -> list[Row]:
    """The compared pairs, each of ours right before its floor (the machine's speed drifts
    within seconds); SQLite files under ``tmp``, PostgreSQL on fresh schemas."""
    chunk = min(args.chunks)
    out = [asyncio.run(api_sequential(sqlite_url(tmp / f"seq{r}.db"), args.seq))]
    out.extend(raw_sqlite_per_row(tmp / f"per_row{r}.db", args.raw_per_row))
    out.append(asyncio.run(api_concurrent(sqlite_url(tmp / f"made{r}.db"), args.concurrent,
                                          chunk, beforehand=True)))
    out.append(raw_sqlite_chunked(tmp / f"chunked{r}.db", args.raw, chunk))
    out.extend(raw_sqlite_one_transaction(tmp / f"one{r}.db", args.raw))
    if postgres:
        steps: list[Callable[[str], list[Row]]] = [
            lambda url: [asyncio.run(api_sequential(url, args.pg_seq, label="PG "))],
            lambda url: raw_postgres(url, "per_row", args.pg_raw_per_row),
            lambda url: [asyncio.run(api_concurrent(url, args.pg_concurrent, chunk,
                                                    label="PG ", beforehand=True))],
            lambda url: raw_postgres(url, "chunked", args.pg_raw, chunk),
            lambda url: raw_postgres(url, "one", args.pg_raw),
        ]
        for step in steps:
            with postgres_schema(args.pg_url) as url:
                out.extend(step(url))
    return out


def medians(rounds: list[list[Row]]) -> list[Row]:
    """Per mode, the round with the median rate (its note says the range over the rounds)."""
    by: dict[str, list[Row]] = {}
    for round_rows in rounds:
        for row in round_rows:
            by.setdefault(row.mode, []).append(row)
    out = []
    for group in by.values():
        group.sort(key=lambda r: rate(r.events, r.seconds))
        mid = group[(len(group) - 1) // 2]
        if len(group) > 1:
            lo, hi = (rate(r.events, r.seconds) for r in (group[0], group[-1]))
            mid.note = f"median of {len(group)} rounds ({lo:,.0f}-{hi:,.0f}/s); {mid.note}"
        out.append(mid)
    return out


def _pick(rows: list[Row], prefix: str) -> float | None:
    return max((rate(r.events, r.seconds) for r in rows if r.mode.startswith(prefix)),
               default=None)


def versus(rows: list[Row], rounds: list[list[Row]], chunk: int) -> list[list[Any]]:
    """Ours next to its floor: the median over the rounds of floor / ours within a round (a
    pair measured seconds apart), with their range; pairs not in the rounds from ``rows``."""
    made = f"(b) {chunk:,} in flight, metrics made beforehand"
    out = []
    for label, ours, floor, limit in (
        (f"SQLite, {chunk:,} calls in flight vs raw executemany, {chunk:,} rows a transaction",
         made, f"(f) raw executemany, inbox-shaped, {chunk:,}", 5),
        ("  the same vs raw executemany of all rows in one transaction", made,
         "(f') raw executemany, inbox-shaped table", None),
        ("  calls building each PerformanceMetric in the loop, vs the same floor",
         "(b) concurrent", f"(f) raw executemany, inbox-shaped, {chunk:,}", None),
        ("SQLite, one await at a time vs one commit per row", "(a) sequential",
         "(f'') raw SQLite", 2),
        (f"PostgreSQL, {chunk:,} calls in flight vs raw COPY, {chunk:,} rows a transaction",
         "PG " + made, f"(g) raw PostgreSQL COPY, {chunk:,}", 5),
        ("  the same vs raw COPY of all rows in one transaction", "PG " + made,
         "(g) raw PostgreSQL COPY, one transaction", None),
        ("PostgreSQL, one await at a time vs one commit per row", "PG (a)",
         "(g) raw PostgreSQL, one commit", 2),
        ("a gather of coroutines vs SQLite raw executemany (no write)", "(ref) gather of",
         f"(f) raw executemany, inbox-shaped, {chunk:,}", None),
    ):
        ratios = [b / a for a, b in ((_pick(one, ours), _pick(one, floor)) for one in rounds)
                  if a is not None and b is not None]
        a, b = _pick(rows, ours), _pick(rows, floor)
        if not ratios and (a is None or b is None):
            continue
        if ratios:
            times = statistics.median(ratios)
            spread = (f"{times:.1f}x ({min(ratios):.1f}-{max(ratios):.1f}x over "
                      f"{len(ratios)} rounds)")
        else:
            assert a is not None and b is not None
            times = b / a
            spread = f"{times:.1f}x"
        out.append([label, a, b, spread, f"<= {limit}x" if limit else "—",
                    ("yes" if times <= limit else "MISS") if limit else ""])
    return out


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--seq", type=int, default=5_000, help="events for (a)")
    p.add_argument("--concurrent", type=int, default=50_000, help="events for (b)")
    p.add_argument("--chunks", type=int_list, default=[1_000, 10_000],
                   help="calls in flight per gather for (b), comma-separated")
    p.add_argument("--no-freeze-row", dest="freeze_row", action="store_false",
                   help="skip the (b) row measured after gc.freeze()")
    p.add_argument("--batch", type=int, default=200_000, help="events for (c)")
    p.add_argument("--batch-sizes", type=int_list, default=[100, 10_000],
                   help="metrics per add_performance_metrics call for (c)")
    p.add_argument("--procs", type=int, default=4, help="OS processes for (d)")
    p.add_argument("--per-proc", type=int, default=50_000, help="events per process for (d)")
    p.add_argument("--proc-chunk", type=int, default=1_000, help="calls in flight per process")
    p.add_argument("--naive", type=int, default=2_000, help="events for (e)")
    p.add_argument("--raw", type=int, default=500_000, help="rows for (f)")
    p.add_argument("--raw-per-row", type=int, default=20_000, help="rows for one-commit-per-row")
    add_pg_option(p)
    p.add_argument("--pg-seq", type=int, default=2_000, help="events for (a) on PostgreSQL")
    p.add_argument("--pg-concurrent", type=int, default=20_000,
                   help="events for (b) on PostgreSQL (smallest --chunks in flight)")
    p.add_argument("--pg-raw", type=int, default=100_000, help="rows for the PostgreSQL floors")
    p.add_argument("--pg-raw-per-row", type=int, default=5_000,
                   help="rows for PostgreSQL one-commit-per-row")
    p.add_argument("--no-postgres", dest="postgres", action="store_false",
                   help="SQLite only")
    p.add_argument("--rounds", type=int, default=5,
                   help="rounds of the compared pairs (ours, then its floor); the median of "
                        "the rounds' ratios is compared")
    args = p.parse_args(argv)
    load_before = machine()
    random.seed(args.seed)

    chunk = min(args.chunks)
    rounds: list[list[Row]] = []
    rows: list[Row] = []
    with temp_dir(args.dir) as tmp:
        def url(name: str) -> str:
            return sqlite_url(tmp / f"{name}.db")

        postgres = args.postgres and "postgresql" in backends(args.pg_url)
        for r in range(args.rounds):  # the compared pairs, ours next to its floor
            rounds.append(one_round(tmp, r, args, postgres))
        rows.extend(medians(rounds))
        for c in args.chunks:
            rows.append(asyncio.run(api_concurrent(url(f"gather{c}"), args.concurrent, c)))
        if args.freeze_row:
            rows.append(asyncio.run(api_concurrent(url("gather-frozen"), args.concurrent,
                                                   max(args.chunks), freeze=True)))
        for size in args.batch_sizes:
            rows.append(asyncio.run(api_batch(url(f"batch{size}"), args.batch, size)))
        rows.append(validation_only(args.concurrent))
        if args.procs > 0:
            rows.extend(api_processes(url("procs"), args.procs, args.per_proc, args.proc_chunk))
        if args.naive > 0:
            rows.append(naive_langgraph(tmp / "naive.db", args.naive, tiny=False))
            rows.append(naive_langgraph(tmp / "naive_tiny.db", args.naive, tiny=True))
        rows.append(asyncio.run(asyncio_floor(args.concurrent, chunk)))
        if postgres:
            with postgres_schema(args.pg_url) as pg:
                rows.append(asyncio.run(api_concurrent(pg, args.pg_concurrent, chunk,
                                                       label="PG ")))

    print_table(
        f"Write throughput, one run (at start: {load_before}; at end: {machine()})",
        ["mode", "events", "seconds", "events/s", "target", "meets", "GC time", "note"],
        [r.cells() for r in rows],
        plain=args.plain,
        notes=[
            "API rows include building/validating each PerformanceMetric (rows 'made "
            "beforehand': dicts made before the clock starts, validated by each call); a call "
            "counts once it returned (its rows are committed).",
            f"Compared pairs: {args.rounds} rounds, each of ours right before its floor; rows "
            "show the median round, the last table the median of the rounds' ratios.",
            "GC time: share of the run spent in CPython's cyclic garbage collector.",
            f"target: >= {TARGET:,} events/s through the API from one process.",
            "PG rows: PostgreSQL at "
            f"{redact(args.pg_url) if args.postgres else 'not measured'}, on this machine.",
        ],
    )
    print_table(
        f"Ours next to the floor, same run ({machine()})",
        ["what", "ours events/s", "floor rows/s", "floor / ours", "target", "meets"],
        versus(rows, rounds, chunk), plain=args.plain,
        notes=["The coroutines row: what a gather of coroutine calls in flight (a task "
               "each) costs on this interpreter and load, before validation or a write; "
               "the API's writes return futures, which gather takes as they are."],
    )


if __name__ == "__main__":
    main()
