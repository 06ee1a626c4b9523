"""``bga metrics``: the state as Prometheus / OpenMetrics metrics on ``/metrics``.

Nothing is counted twice: every number comes from a named query of ``state.queries``
(liveness from ``queries.liveness``, series from ``queries.performance_summary``, insights,
error patterns and the inbox from ``queries.system_state``), read through ``SharedState`` at
scrape time. Labels stay bounded: ``agent`` and ``series`` (capped by
``retention.max_series``), and small fixed sets (verdict, priority, status, quantile, unit).

Series figures are over the last ``WINDOW_HOURS`` (the window of ``bga status``), so they are
gauges, not counters: buckets age out of retention and a windowed count goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from graph.cli_errors import CommandError
from state import queries
from state.api import SharedState
from state.lifecycle import STATES
from state.redact import redact

PREFIX = "bga"
WINDOW_HOURS = 1
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
SCRAPE_TIMEOUT_S = 10.0
# (agent kind, its per-step count series, metric stem, what is counted)
THROUGHPUT = (("profile_import", "rows_read", "importer", "rows"),
              ("langsmith_bridge", "runs_mirrored", "bridge", "runs"))
THE = {"importer": "the profile importer read", "bridge": "the LangSmith bridge mirrored"}


def _gauge(name: str, doc: str, labels: list[str] | None = None, unit: str = ""
           ) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels, unit=unit)


def families(state: dict[str, Any], now: float, pending: int = 0) -> list[Metric]:
    """The metric families of one state read at ``now`` (``pending``: unfolded inbox rows)."""
    live = queries.liveness(state, now)
    summary = queries.system_state(state, now, pending=pending)
    perf = queries.performance_summary(state, WINDOW_HOURS, now)
    out: list[Metric] = []

    verdict = _gauge("agent_liveness", "1 for the agent's liveness verdict, 0 for the others",
                     ["agent", "verdict"])
    age = _gauge("agent_heartbeat_age_seconds",
                 "Seconds since the agent's last heartbeat (or registration)", ["agent"])
    interval = _gauge("agent_expected_interval_seconds",
                      "Seconds expected between two runs of the agent", ["agent"])
    for agent, v in live["agents"].items():
        for name in queries.VERDICTS:
            verdict.add_metric([agent, name], 1.0 if v["verdict"] == name else 0.0)
        if v["age_s"] is not None:
            age.add_metric([agent], v["age_s"])
        interval.add_metric([agent], v["expected_interval_s"])
    agents = _gauge("agents", "Registered agents per liveness verdict", ["verdict"])
    for name, n in live["counts"].items():
        agents.add_metric([name], n)
    out += [verdict, age, interval, agents]

    sched = live["scheduler"]
    running = _gauge("scheduler_running", "1 while ticks are ending in time, else 0")
    running.add_metric([], 1.0 if sched["verdict"] == "running" else 0.0)
    out.append(running)
    if sched["last_tick_at"] is not None:
        last = _gauge("last_tick_timestamp_seconds", "Unix time the last tick ended")
        last.add_metric([], sched["last_tick_at"])
        tick_age = _gauge("last_tick_age_seconds", "Seconds since the last tick ended")
        tick_age.add_metric([], sched["age_s"])
        out += [last, tick_age]
    tick = summary["values"].get("last_tick") or {}
    if isinstance(tick.get("duration_ms"), int | float):
        took = _gauge("last_tick_duration_seconds", "How long the last tick took, in seconds")
        took.add_metric([], tick["duration_ms"] / 1000.0)
        out.append(took)
    stats = summary["stats"]
    for key, name, doc in (("ticks", "ticks", "Ticks of the system graph"),
                           ("events_folded", "events_folded", "Events folded into the state"),
                           ("quarantined", "events_quarantined",
                            "Events set aside as unreadable")):
        counter = CounterMetricFamily(f"{PREFIX}_{name}", doc)
        counter.add_metric([], float(stats.get(key, 0)))
        out.append(counter)

    # gauges, so none may end in _count/_sum or carry a "quantile" label (promtool)
    labels = ["series", "agent", "unit"]
    w = f"over the last {WINDOW_HOURS:g} h"
    count = _gauge("series_window_measurements", f"Measurements of the series {w}", labels)
    total = _gauge("series_window_sum_of_values", f"Sum of the series' measurements {w}",
                   labels)
    quantiles = {field: _gauge(f"series_window_{field}",
                               f"{q} quantile of the series {w} (sketch, within 2 %)", labels)
                 for q, field in QUANTILES}
    for series, s in perf["series"].items():
        values = [series, s["source_agent"], s["unit"] or ""]
        count.add_metric(values, s["count"])
        total.add_metric(values, s["sum"])
        for field, gauge in quantiles.items():
            if s[field] is not None:
                gauge.add_metric(values, s[field])
    out += [count, total, *quantiles.values()]

    out += throughput(state, perf, now)

    errs = summary["error_patterns"]
    patterns = _gauge("error_patterns", "Distinct error patterns kept in the state")
    patterns.add_metric([], errs["total"])
    active = _gauge("error_patterns_window_active", "Error patterns seen in the last hour")
    active.add_metric([], errs["active_1h"])
    events = _gauge("error_window_events", "Error occurrences in the last hour")
    events.add_metric([], errs["events_1h"])
    out += [patterns, active, events]

    ins = summary["insights"]
    open_ = _gauge("insights_open", "Open insights (open or regressed, not muted) by priority",
                   ["priority"])
    for priority, n in ins["open_by_priority"].items():
        open_.add_metric([priority], n)
    by_status = _gauge("insights", "Insights by shown state", ["status"])
    for status in STATES:
        by_status.add_metric([status], ins["by_status"].get(status, 0))
    out += [open_, by_status]

    inbox = _gauge("inbox_pending_events", "Events written but not yet folded")
    inbox.add_metric([], summary["inbox"]["pending"])
    series_n = _gauge("series", "Metric series kept in the state")
    series_n.add_metric([], summary["metrics"]["series"])
    out += [inbox, series_n]
    return out


def throughput(state: dict[str, Any], perf: dict[str, Any], now: float) -> list[Metric]:
    """Rows the importers read and runs the bridges mirrored over the window, per agent of
    that kind, and the same per second (the window's sum over its length): the sums of the
    agents' own per-step series (``<agent>/rows_read``, ``<agent>/runs_mirrored``)."""
    seconds = WINDOW_HOURS * 3600.0
    kinds = {a["agent_id"]: a["kind"] for a in queries.agent_list(state)}
    out: list[Metric] = []
    for kind, series_name, stem, what in THROUGHPUT:
        w = f"over the last {WINDOW_HOURS:g} h"
        total = _gauge(f"{stem}_window_{what}", f"{what.capitalize()} {THE[stem]} {w}",
                       ["agent"])
        rate = _gauge(f"{stem}_window_{what}_per_second",
                      f"{what.capitalize()} per second {THE[stem]}, averaged {w}", ["agent"])
        for agent in sorted(a for a, k in kinds.items() if k == kind):
            s = perf["series"].get(f"{agent}/{series_name}")
            done = float(s["sum"]) if s else 0.0
            total.add_metric([agent], done)
            rate.add_metric([agent], done / seconds)
        out += [total, rate]
    return out


class StateCollector(Collector):
    """Reads the state at every scrape, on the event loop that owns ``shared``; the HTTP
    server calls ``collect`` from its own threads. A failed read yields ``bga_state_up 0``
    (and a line on stderr) instead of a 500, so the scrape itself stays healthy."""

    def __init__(self, shared: SharedState, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] = time.time) -> None:
        self.shared, self.loop, self.clock = shared, loop, clock
        self._lock = asyncio.Lock()  # one read at a time on the shared connection

    async def _read(self) -> tuple[dict[str, Any], int]:
        async with self._lock:
            state = await self.shared.read()
            return state, self.shared.pending

    def collect(self) -> Iterator[Metric]:
        up = _gauge("state_up", "1 if the last scrape read the state, else 0")
        try:
            state, pending = asyncio.run_coroutine_threadsafe(
                self._read(), self.loop).result(SCRAPE_TIMEOUT_S)
            metrics = families(state, self.clock(), pending)
        except Exception as exc:  # the database is down, locked, unreadable: report, go on
            print(f"bga metrics: cannot read the state: {redact(str(exc))}", file=sys.stderr)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from metrics


@contextlib.asynccontextmanager
async def serve(url: str, port: int, *, host: str = "127.0.0.1",
                clock: Callable[[], float] = time.time) -> AsyncIterator[int]:
    """Serve ``/metrics`` for the state at ``url`` on ``host:port`` (0: a free port) while
    the context is open; yields the bound port. Reads run on the caller's event loop."""
    async with SharedState.open(url, producer="metrics", read_only=True,
                                 must_exist=True) as shared:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(StateCollector(shared, asyncio.get_running_loop(), clock))
        try:
            httpd, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:  # the port is taken, or not ours to bind
            raise CommandError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                               "choose a free --port (0 picks one)") from exc
        try:
            yield httpd.server_address[1]
        finally:
            await asyncio.to_thread(httpd.shutdown)  # a scrape in flight needs this loop
            httpd.server_close()
            await asyncio.to_thread(thread.join, 5)
