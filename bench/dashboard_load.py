"""Dashboard load and render time on a state with full retention.

For each size, writes a state through the SharedState API in which every metric series fills
every retained bucket (120 one-minute, 168 one-hour and 30 one-day buckets by default), the
keyed collections are at their caps (500 error patterns, 500 insights, 500 optimization
records) and several checkpoints are retained, then measures, cold (caches cleared):

  - loading the latest state (``dashboard.data.load_uncached``: open read-only, read)
  - listing the retained checkpoints (time travel) and loading the oldest one
  - each page rendered by Streamlit's AppTest, load included (server side: the script run
    that produces the page; the browser's drawing is not included)

    .venv/bin/python bench/dashboard_load.py                     # 50 and 500 series
    .venv/bin/python bench/dashboard_load.py --series 50 --checkpoints 100 --repeat 7
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from _common import (
    AGENTS,
    fmt_bytes,
    int_list,
    latency,
    machine,
    parser,
    print_table,
    series_names,
    sqlite_url,
    temp_dir,
    verdict,
    word,
)

from dashboard import data
from state import OptimizationRecord, PerformanceMetric, SharedState
from state.config import RetentionConfig

TARGET_MS = 1000.0
APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES: list[tuple[str, str, dict[str, str]]] = [
    ("overview", "overview", {}),
    ("agents", "agents", {}),
    ("performance, 1 h", "performance", {}),
    ("performance, 7 d", "performance", {"perf_window": "7 d"}),
    ("error patterns, 24 h", "errors", {}),
    ("insights", "insights", {}),
    ("insights, all states", "insights", {"ins_state": "All"}),
    ("optimizations", "optimizations", {}),
    ("configuration", "configuration", {}),
    ("time travel: list", "time_travel", {}),
    ("time travel: oldest checkpoint", "time_travel", {"tt_checkpoint": "oldest"}),
    ("export", "export", {}),
]


def bucket_times(now: float, r: RetentionConfig) -> list[float]:
    """One timestamp inside every bucket that retention keeps, for each tier."""
    minutes = [now - i * 60 for i in range(r.minute_buckets)]
    hours = [now - i * 3600 for i in range(r.hour_buckets)]
    days = [now - i * 86400 for i in range(r.day_buckets)]
    return sorted(set(minutes + hours + days))


async def build(url: str, n_series: int, per_bucket: int, checkpoints: int,
                rng: random.Random) -> dict[str, Any]:
    r = RetentionConfig()
    now = time.time() - 1
    stamps = bucket_times(now, r)
    async with SharedState.open(url, producer="bench-dashboard") as shared:
        for agent in AGENTS:
            await shared.register_agent(agent, kind=agent, interval_s=60)
            await shared.update_agent_heartbeat(agent, {"status": "running"})
        written = 0
        for agent, name in series_names(n_series):
            batch = [PerformanceMetric(source_agent=agent, name=name, value=latency(rng),
                                       unit="ms", timestamp=ts)
                     for ts in stamps for _ in range(per_bucket)]
            written += await shared.add_performance_metrics(batch)
            if written >= 200_000:
                await shared.flush()
                written = 0
        await asyncio.gather(*(shared.add_error_pattern(
            "ValueError", f"cannot parse field {word(p)} in row {p}", AGENTS[p % len(AGENTS)])
            for p in range(r.max_error_patterns)))
        await asyncio.gather(*(shared.add_insight(
            "latency_regression", {"key": f"k{k}", "summary": f"series {k} is slower",
                                   "p95_ms": round(latency(rng), 1)},
            "coordinator", priority=("low", "medium", "high", "critical")[k % 4])
            for k in range(r.max_insights)))
        await asyncio.gather(*(shared.add_optimization_record(OptimizationRecord(
            optimization_type="tune_batch_size", target=AGENTS[k % len(AGENTS)],
            before={"batch_size": 500}, after={"batch_size": 1000},
            outcome=("kept", "rolled_back", "applied")[k % 3], timestamp=now - k * 600))
            for k in range(r.max_optimizations)))
        await shared.flush()
        for i in range(checkpoints - 1):  # each flush of a new write is one more checkpoint
            await shared.update_agent_heartbeat(AGENTS[i % len(AGENTS)], {"status": "running"})
            await shared.flush()
        summary = await shared.get_system_state()
    return summary


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def render(page: str, widgets: dict[str, str]) -> Callable[[], None]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page(f"views/{page}.py").run()
    for key, value in widgets.items():
        if key == "tt_checkpoint":  # pick the oldest retained checkpoint listed
            box = at.selectbox(key=key)
            box.select_index(len(box.options) - 1).run()
        else:
            at.segmented_control(key=key).set_value(value).run()

    def run() -> None:
        at.run()
        if at.exception:
            raise RuntimeError(f"{page}: {[e.value for e in at.exception]}")

    return run


def measure(url: str, repeat: int) -> list[tuple[str, list[float]]]:
    rows: list[tuple[str, list[float]]] = []
    rows.append(("load latest state", timed(lambda: data.load_uncached(url=url), repeat,
                                            data.refresh)))
    history = data.checkpoints(url)
    rows.append(("list newest 20 checkpoints", timed(lambda: data.checkpoints(url, 20),
                                                     repeat, data.refresh)))
    rows.append((f"list all {len(history)} checkpoints", timed(lambda: data.checkpoints(url),
                                                               repeat, data.refresh)))
    oldest = history[-1]["checkpoint_id"]
    rows.append(("load oldest checkpoint", timed(
        lambda: data.load_uncached(checkpoint_id=oldest, url=url), repeat, data.refresh)))
    for label, page, widgets in PAGES:
        rows.append((f"page: {label}", timed(render(page, widgets), repeat, data.refresh)))
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--series", default="50,500", help="metric series per state (list)")
    p.add_argument("--checkpoints", default="100,10",
                   help="retained checkpoints per state (list, paired with --series)")
    p.add_argument("--per-bucket", type=int, default=3, help="samples per retained bucket")
    p.add_argument("--repeat", type=int, default=5, help="cold runs per figure (median, max)")
    args = p.parse_args()
    sizes = int_list(args.series)
    cps = int_list(args.checkpoints)
    cps += [cps[-1]] * (len(sizes) - len(cps))
    rng = random.Random(args.seed)
    table: list[list[Any]] = []
    notes = [machine(), f"{args.repeat} cold runs each (caches cleared); target < "
             f"{TARGET_MS:.0f} ms for load + render"]
    with temp_dir(args.dir) as tmp:
        for n_series, n_cp in zip(sizes, cps, strict=True):
            path = tmp / f"dash-{n_series}.db"
            url = sqlite_url(path)
            t0 = time.perf_counter()
            summary = asyncio.run(build(url, n_series, args.per_bucket, n_cp, rng))
            build_s = time.perf_counter() - t0
            size = sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal")
                       if Path(f"{path}{s}").exists())
            retained = len(data.checkpoints(url))
            notes.append(f"{n_series} series: built in {build_s:.1f} s; database "
                         f"{fmt_bytes(size)} with {retained} checkpoints; "
                         f"{summary['error_patterns']['total']} error patterns, "
                         f"{summary['insights']['total']} insights, "
                         f"{summary['optimizations']['total']} optimization records")
            with mock.patch.dict(os.environ, {"BGA_DATABASE_URL": url}):  # read by the app
                measured = measure(url, args.repeat)
            for what, ms in measured:
                med = statistics.median(ms)
                table.append([n_series, what, med, max(ms),
                              verdict(med, TARGET_MS, higher_is_better=False)])
    print_table("Dashboard: load and render a full-retention state (ms)",
                ["series", "what", "median ms", "max ms", f"< {TARGET_MS:.0f} ms"], table,
                plain=args.plain, notes=notes)


if __name__ == "__main__":
    main()
