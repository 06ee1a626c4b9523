"""Helpers shared by the benchmark scripts: tables, temporary databases, timers, event makers.

Benchmarks print measured figures; they never pass or fail. Every script takes ``--plain`` to
print a plain-text table instead of a rich one (for logs and CI output).

Also shared: fresh state databases of either backend (a new SQLite file, or a new PostgreSQL
schema dropped afterwards), the write benchmarks' metric mix and producer processes, and the
fold benchmarks' mixed fill and timed ``flush()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import math
import multiprocessing as mp
import os
import platform
import queue
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import state.folder
from state import PerformanceMetric, SharedState
from state.fold import DeltaBuilder

N_SERIES = 50
AGENTS = ("profile_import", "langsmith_bridge", "coordinator", "billing", "search")
PG_ENV = "BGA_BENCH_POSTGRES_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


# -- command line -------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument("--dir", default=None,
                   help="directory for the temporary databases (default: system temp dir)")
    p.add_argument("--seed", type=int, default=7, help="random seed for generated events")
    return p


def add_pg_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pg-url", default=os.environ.get(PG_ENV) or PG_DEFAULT,
                   help=f"PostgreSQL server for the runs (default: ${PG_ENV}, then {PG_DEFAULT}); "
                        "each run gets a fresh schema, dropped afterwards")


def int_list(text: str) -> list[int]:
    """``"10000,100k,1M"`` -> ``[10000, 100000, 1000000]``."""
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        scale = 1
        if part.endswith("k"):
            scale, part = 1_000, part[:-1]
        elif part.endswith("m"):
            scale, part = 1_000_000, part[:-1]
        out.append(int(float(part) * scale))
    return out


# -- output -------------------------------------------------------------------------------------


def machine() -> str:
    """Interpreter, CPUs and the load average (other work on the machine skews timings)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, load {load:.1f}")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                plain: bool = False, notes: Sequence[str] = ()) -> None:
    """Print one table of figures (rich by default, plain text with ``plain``)."""
    cells = [[_cell(v) for v in row] for row in rows]
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:  # pragma: no cover - rich is a dependency, but stay usable
            plain = True
    if plain:
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        print(f"\n{title}")
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print("  ".join(v.rjust(w) if i else v.ljust(w)
                            for i, (v, w) in enumerate(zip(r, widths, strict=True))))
        for n in notes:
            print(f"  * {n}")
        return
    table = Table(title=title, title_justify="left", show_lines=False)
    for i, c in enumerate(columns):
        table.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
    for r in cells:
        table.add_row(*r)
    natural = sum(max([len(c)] + [len(r[i]) for r in cells])
                  for i, c in enumerate(columns)) + 3 * len(columns) + 1
    console = Console(width=max(natural, len(title), 80))
    console.print()
    console.print(table)
    for n in notes:
        console.print(f"  * {n}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}"
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def rate(n: float, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n:,.2f} GB"


def verdict(value: float, target: float, *, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value <= target
    return "yes" if ok else "MISS"


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(samples)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


# -- databases ----------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_dir(base: str | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bga-bench-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def with_schema(base: str, schema: str) -> str:
    """``base`` with its search_path set to ``schema`` (the state's tables land there)."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


def postgres_unreachable(base: str) -> str | None:
    """None if the PostgreSQL server at ``base`` answers, else why not (one line)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install -e '.[postgres]'"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: measure without it
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


@contextlib.contextmanager
def postgres_schema(base: str) -> Iterator[str]:
    """URL of a fresh, empty ``bga_b_<hex>`` schema on ``base``, dropped (CASCADE) on exit."""
    import psycopg

    schema = f"bga_b_{uuid.uuid4().hex[:16]}"
    admin = psycopg.connect(base, autocommit=True, connect_timeout=10)
    try:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_schema(base, schema)
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


REDIS_ENV = "BGA_BENCH_REDIS_URL"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"


def redis_base() -> str:
    """The Redis server for the runs: ``$BGA_BENCH_REDIS_URL``, else the local default."""
    return os.environ.get(REDIS_ENV) or REDIS_DEFAULT


def redis_unreachable(base: str) -> str | None:
    """None if the Redis server at ``base`` answers, else why not (one line)."""
    import redis

    try:
        client = redis.Redis.from_url(base.split("?", 1)[0], socket_connect_timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # any failure means: measure without it
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


@contextlib.contextmanager
def redis_prefix(base: str) -> Iterator[str]:
    """URL of a fresh ``b<hex>`` key prefix on ``base``, its keys deleted on exit."""
    import redis

    from state.backends.url import parse_url

    url = f"{base.split('?', 1)[0]}?prefix=b{uuid.uuid4().hex[:16]}"
    try:
        yield url
    finally:
        client = redis.Redis.from_url(base.split("?", 1)[0], socket_connect_timeout=10)
        try:
            keys = list(client.scan_iter(match=parse_url(url).key_prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                client.unlink(*keys[i:i + 500])
        finally:
            client.close()


BACKEND_LABEL = {"postgresql": "PostgreSQL", "sqlite": "SQLite", "redis": "Redis"}


@contextlib.contextmanager
def fresh_db(backend: str, tmp: Path, pg_base: str, name: str) -> Iterator[str]:
    """URL of a fresh, empty state database: a new PostgreSQL schema (``backend`` is
    ``postgresql``), a new Redis key prefix (``redis``, on ``redis_base()``) or a new SQLite
    file in ``tmp`` named after ``name``."""
    if backend == "postgresql":
        with postgres_schema(pg_base) as url:
            yield url
    elif backend == "redis":
        with redis_prefix(redis_base()) as url:
            yield url
    else:
        path = tmp / f"{name}.db"
        if path.exists():
            raise FileExistsError(path)
        yield sqlite_url(path)


def backends(pg_base: str) -> list[str]:
    """``["postgresql", "redis", "sqlite"]``, less a server that is unreachable (saying so)."""
    from state.redact import redact

    out = []
    why = postgres_unreachable(pg_base)
    if why is None:
        out.append("postgresql")
    else:
        print(f"PostgreSQL at {redact(pg_base)} is unreachable ({why}); measuring without it "
              f"(set --pg-url or ${PG_ENV})", flush=True)
    why = redis_unreachable(redis_base())
    if why is None:
        out.append("redis")
    else:
        print(f"Redis at {redact(redis_base())} is unreachable ({why}); measuring without it "
              f"(set ${REDIS_ENV})", flush=True)
    return [*out, "sqlite"]


async def inbox_rows(url: str) -> int:
    """Rows in the inbox of the state at ``url`` (written, not yet folded)."""
    async with SharedState.open(url, producer="bench-count", read_only=True,
                                must_exist=True) as shared:
        return await shared.backend.pending_count()


def db_files(path: Path) -> dict[str, int]:
    """Sizes of the database file and its -wal / -shm companions (0 when absent)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(f"{path}{suffix}")
        out[suffix or "db"] = p.stat().st_size if p.exists() else 0
    return out


# -- timing -------------------------------------------------------------------------------------


class GcTimer:
    """Measures how long CPython's cyclic garbage collector ran (per generation)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.runs = [0, 0, 0]
        self._t0 = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            g = info["generation"]
            self.seconds[g] += time.perf_counter() - self._t0
            self.runs[g] += 1

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    @property
    def total(self) -> float:
        return sum(self.seconds)


@dataclass
class Phase:
    calls: int = 0
    seconds: float = 0.0


def wrap_async(obj: Any, name: str, phases: dict[str, Phase], label: str | None = None) -> None:
    """Replace ``obj.name`` (an async callable) by a version that adds its time to ``phases``."""
    original = getattr(obj, name)
    phase = phases.setdefault(label or name, Phase())

    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            phase.calls += 1
            phase.seconds += time.perf_counter() - t0

    setattr(obj, name, timed)


def wrap_sync(obj: Any, name: str, phases: dict[str, Phase], label: str | None = None) -> None:
    original = getattr(obj, name)
    phase = phases.setdefault(label or name, Phase())

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phase.calls += 1
            phase.seconds += time.perf_counter() - t0

    setattr(obj, name, timed)


# -- generated events ---------------------------------------------------------------------------


def series_names(n: int = N_SERIES) -> list[tuple[str, str]]:
    """``n`` (source_agent, metric name) pairs."""
    names = ("latency_ms", "batch_size", "rows_per_s", "queue_depth", "error_rate",
             "tokens", "cost_usd", "retries", "cpu_pct", "mem_mb")
    return [(AGENTS[i % len(AGENTS)], f"{names[(i // len(AGENTS)) % len(names)]}_{i}")
            for i in range(n)]


def latency(rng: random.Random) -> float:
    """A positive, long-tailed value (lognormal around 100): fills many sketch bins."""
    return rng.lognormvariate(math.log(100.0), 1.0)


def word(i: int) -> str:
    """A letters-only word unique per ``i`` (survives error-message normalisation)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    i += 26 * 26
    while i:
        i, r = divmod(i, 26)
        out = letters[r] + out
    return out


SERIES = series_names()


def metric(i: int) -> PerformanceMetric:
    """Event ``i`` of the write benchmarks' mix: one metric, round-robin over 50 series."""
    agent, name = SERIES[i % len(SERIES)]
    return PerformanceMetric(source_agent=agent, name=name, value=(i % 1000) + 0.5, unit="ms")


# -- the write path -----------------------------------------------------------------------------


async def warm(shared: SharedState) -> None:
    """First write opens the producer's inbox stream; keep it out of the timings."""
    await shared.add_performance_metric(metric(0))


async def gather_chunks(shared: SharedState, n: int, chunk: int, offset: int = 0) -> None:
    """``n`` single ``add_performance_metric`` calls, ``chunk`` in flight at a time."""
    add = shared.add_performance_metric
    for start in range(offset, offset + n, chunk):
        stop = min(start + chunk, offset + n)
        await asyncio.gather(*(add(metric(i)) for i in range(start, stop)))


@dataclass
class ProducerRun:
    """Several producer processes writing at once: their common start and last finish."""

    procs: int
    per_proc: int
    start: float  # time.monotonic(): system-wide on Linux, comparable across processes
    end: float
    slowest: float  # seconds of the slowest producer

    @property
    def events(self) -> int:
        return self.procs * self.per_proc

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _producer_main(url: str, index: int, n: int, chunk: int, barrier: Any, out: Any) -> None:
    async def run() -> tuple[float, float]:
        async with SharedState.open(url, producer=f"bench-proc-{index}") as shared:
            await warm(shared)
            gc.collect()
            barrier.wait(timeout=600)  # all imported, connected and warmed up: start together
            t0 = time.monotonic()
            await gather_chunks(shared, n, chunk, offset=index * n)
            return t0, time.monotonic()

    t0, t1 = asyncio.run(run())
    out.put((index, t0, t1))


def run_producers(url: str, procs: int, n: int, chunk: int, *,
                  timeout: float = 1800) -> ProducerRun:
    """``procs`` OS processes (spawned), each opening its own ``SharedState`` on ``url`` and
    writing ``n`` metrics as ``gather_chunks``, started together behind a barrier once every
    one has connected and written a warm-up event (so ``procs`` extra rows land in the inbox).
    A call counts once it returned, i.e. its rows are committed."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    workers = [ctx.Process(target=_producer_main, args=(url, i, n, chunk, barrier, out))
               for i in range(procs)]
    results: list[tuple[int, float, float]] = []
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + timeout
        while len(results) < procs:
            try:
                results.append(out.get(timeout=0.5))
                continue
            except queue.Empty:  # check that nobody died instead
                pass
            if any(w.exitcode not in (None, 0) for w in workers):
                barrier.abort()
                raise RuntimeError("a producer process failed (see its traceback above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"producers did not finish within {timeout:.0f} s")
        for w in workers:
            w.join()
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join()
    if any(w.exitcode for w in workers):
        raise RuntimeError("a producer process failed")
    return ProducerRun(procs, n, min(r[1] for r in results), max(r[2] for r in results),
                       max(r[2] - r[1] for r in results))


# -- the fold benchmarks' event mix -------------------------------------------------------------

FILL_BLOCK = 1_000


def add_mix_options(p: argparse.ArgumentParser) -> None:
    """The event mix of ``fill`` (fold benchmarks)."""
    p.add_argument("--metrics-pct", type=float, default=90.0)
    p.add_argument("--errors-pct", type=float, default=4.0)
    p.add_argument("--insights-pct", type=float, default=2.0)
    p.add_argument("--patterns", type=int, default=100, help="distinct error patterns")
    p.add_argument("--insights", type=int, default=200, help="distinct insight keys")
    p.add_argument("--agents", type=int, default=10, help="agents sending heartbeats")
    p.add_argument("--spread-minutes", type=float, default=60.0,
                   help="metric timestamps spread over this many minutes back from now")


def mix_label(args: Any) -> str:
    return (f"{args.metrics_pct:.0f} % metrics / {args.errors_pct:.0f} % errors / "
            f"{args.insights_pct:.0f} % insights / rest heartbeats")


async def fill(shared: SharedState, n: int, args: Any, rng: random.Random,
               offset: int = 0) -> dict[str, int]:
    """Write ``n`` mixed events through the API, in blocks of 1,000 (metrics batched)."""
    counts = {"metric": 0, "error": 0, "insight": 0, "heartbeat": 0}
    now = time.time()
    spread = args.spread_minutes * 60
    for start in range(offset, offset + n, FILL_BLOCK):
        size = min(FILL_BLOCK, offset + n - start)
        metrics: list[PerformanceMetric] = []
        others: list[Awaitable[Any]] = []
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


def phase_rows(label: str, total: float, phases: dict[str, Phase],
               gc_s: float) -> list[list[Any]]:
    """Rows of a "where flush() spends its time" table for one timed flush."""
    rows: list[list[Any]] = []
    for name, ph in phases.items():
        if ph.calls:
            rows.append([f"{label}: {name}", ph.calls, ph.seconds,
                         f"{100 * ph.seconds / total:.1f} %"])
    accounted = sum(ph.seconds for ph in phases.values())
    rows.append([f"{label}: other (lock, loop, config)", "", total - accounted,
                 f"{100 * (total - accounted) / total:.1f} %"])
    rows.append([f"{label}: (GC inside the above)", "", gc_s, f"{100 * gc_s / total:.1f} %"])
    return rows
