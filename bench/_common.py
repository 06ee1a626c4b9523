"""Helpers shared by the benchmark scripts: tables, temporary databases, timers, event makers.

Benchmarks print measured figures; they never pass or fail. Every script takes ``--plain`` to
print a plain-text table instead of a rich one (for logs and CI output).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

N_SERIES = 50
AGENTS = ("profile_import", "langsmith_bridge", "coordinator", "billing", "search")


# -- command line -------------------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--plain", action="store_true", help="plain-text tables instead of rich")
    p.add_argument("--dir", default=None,
                   help="directory for the temporary databases (default: system temp dir)")
    p.add_argument("--seed", type=int, default=7, help="random seed for generated events")
    return p


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
