"""``bga metrics``: values written through ``SharedState`` come out of ``/metrics`` (scraped over
HTTP, parsed with prometheus_client's own parser, checked by ``promtool`` and scraped by a real
Prometheus server), with the heartbeat age judged at an injected ``now``."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from graph import metrics, runner
from graph.cli import app
from state.api import SharedState

SERIES = "worker/latency_ms"
AGE_S = 42.5  # the fixed clock: this long after the worker's heartbeat


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


async def scrape(port: int) -> str:
    """GET /metrics from a thread: the collector's reads run on this test's event loop."""
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float:
    return parsed[(name, frozenset(labels.items()))]


async def write_fixture(url: str) -> tuple[list[float], float, float]:
    """Two agents, a skewed series, a repeated error, insights; one event left unfolded.
    Returns the values written, the worker's and the sleeper's heartbeat times."""
    rng = random.Random(18)
    # skewed (1 to 150, most near 1), with zeros
    values = [1 + 149 * rng.random() ** 3 for _ in range(500)] + [0.0] * 3
    async with SharedState.open(url, producer="test") as shared:
        await shared.register_agent("worker", kind="demo", interval_s=60)
        await shared.register_agent("sleeper", kind="demo", interval_s=2)
        await shared.update_agent_heartbeat("sleeper", {"status": "ok"})
        await shared.update_agent_heartbeat("worker", {"status": "ok"})
        await shared.add_performance_metrics(
            [{"source_agent": "worker", "name": "latency_ms", "value": v, "unit": "ms"}
             for v in values])
        for _ in range(2):
            await shared.add_error_pattern("TimeoutError", "upstream timed out after 30s",
                                           "worker")
        await shared.add_insight("slow", {"p95": 1}, "worker", "high")
        await shared.add_insight("odd", {"x": 1}, "worker", "low")
        await shared.flush()
        await shared.add_error_pattern("TimeoutError", "upstream timed out after 31s", "worker")
        beats = {a["agent_id"]: a["last_heartbeat"] for a in await shared.get_agents()}
    return values, beats["worker"], beats["sleeper"]


async def test_scrape_returns_what_was_written(db_url: str) -> None:
    values, worker_at, sleeper_at = await write_fixture(db_url)
    now = worker_at + AGE_S
    async with metrics.serve(db_url, 0, clock=lambda: now) as port:
        parsed = samples(await scrape(port))

    assert value(parsed, "bga_state_up") == 1
    assert value(parsed, "bga_agent_heartbeat_age_seconds", agent="worker") == \
        pytest.approx(AGE_S)
    assert value(parsed, "bga_agent_heartbeat_age_seconds", agent="sleeper") == \
        pytest.approx(now - sleeper_at)
    # 42.5 s is under 2 x 60 s for the worker, over 10 x 2 s for the sleeper
    for agent, verdict in (("worker", "active"), ("sleeper", "dead")):
        for v in ("active", "stale", "dead", "unknown"):
            assert value(parsed, "bga_agent_liveness", agent=agent, verdict=v) == \
                (1 if v == verdict else 0), (agent, v)
    assert value(parsed, "bga_agents", verdict="dead") == 1
    assert value(parsed, "bga_scheduler_running") == 0  # nothing ticks in this test

    key = {"series": SERIES, "agent": "worker", "unit": "ms"}
    assert value(parsed, "bga_series_window_measurements", **key) == len(values)
    assert value(parsed, "bga_series_window_sum_of_values", **key) == \
        pytest.approx(math.fsum(values))
    ordered = sorted(values)
    for field, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        exact = ordered[math.floor(q * (len(values) - 1))]  # the sketch's rank rule
        got = value(parsed, f"bga_series_window_{field}", **key)
        assert abs(got - exact) <= 0.02 * exact, (field, got, exact)

    assert value(parsed, "bga_error_patterns") == 1
    assert value(parsed, "bga_error_window_events") == 3  # two folded, one still in the inbox
    assert value(parsed, "bga_inbox_pending_events") == 1
    assert value(parsed, "bga_insights_open", priority="high") == 1
    assert value(parsed, "bga_insights_open", priority="low") == 1
    assert value(parsed, "bga_insights_open", priority="critical") == 0
    assert value(parsed, "bga_insights", status="open") == 2


async def test_promtool_finds_the_exposition_clean(db_url: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI (Debian package `prometheus`)")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    await write_fixture(db_url)
    async with SharedState.open(db_url, producer="test") as shared:
        await write_throughput(shared)
        await runner.tick(shared)  # the tick and throughput families too
    async with metrics.serve(db_url, 0) as port:
        text = await scrape(port)
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bga_series_window_p95" in text
    assert "bga_importer_window_rows_per_second" in text
    assert "bga_last_tick_duration_seconds" in text


def test_a_taken_port_is_one_clear_error(sqlite_url: str) -> None:
    asyncio.run(write_fixture(sqlite_url))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["metrics", "--db", sqlite_url, "--port", str(port)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert f"cannot serve metrics on 127.0.0.1:{port}" in text
    assert "Traceback" not in text


async def write_throughput(shared: SharedState) -> tuple[list[float], list[float]]:
    """Two importers' and a bridge's per-step counts (what the agents report), plus a
    same-named series of an agent of another kind that must not count."""
    rows = [1200.0, 0.0, 37.0, 5.5e6]
    runs = [3.0, 100.0, 0.0]
    await shared.register_agent("imp_a", kind="profile_import", interval_s=30)
    await shared.register_agent("imp_b", kind="profile_import", interval_s=30)
    await shared.register_agent("bridge", kind="langsmith_bridge", interval_s=30)
    await shared.register_agent("other", kind="demo", interval_s=30)
    await shared.add_performance_metrics(
        [{"source_agent": "imp_a", "name": "rows_read", "value": v, "unit": "rows"}
         for v in rows]
        + [{"source_agent": "bridge", "name": "runs_mirrored", "value": v} for v in runs]
        + [{"source_agent": "other", "name": "rows_read", "value": 999.0}])
    return rows, runs


async def test_tick_duration_and_throughput(db_url: str) -> None:
    async with SharedState.open(db_url, producer="test") as shared:
        rows, runs = await write_throughput(shared)
        await runner.tick(shared)
        tick = (await shared.get_system_state())["values"]["last_tick"]
    async with metrics.serve(db_url, 0) as port:
        parsed = samples(await scrape(port))
    assert value(parsed, "bga_last_tick_duration_seconds") == \
        pytest.approx(tick["duration_ms"] / 1000)
    assert value(parsed, "bga_importer_window_rows", agent="imp_a") == math.fsum(rows)
    assert value(parsed, "bga_importer_window_rows_per_second", agent="imp_a") == \
        pytest.approx(math.fsum(rows) / 3600)
    assert value(parsed, "bga_importer_window_rows", agent="imp_b") == 0  # registered, idle
    assert value(parsed, "bga_bridge_window_runs", agent="bridge") == math.fsum(runs)
    assert value(parsed, "bga_bridge_window_runs_per_second", agent="bridge") == \
        pytest.approx(math.fsum(runs) / 3600)
    assert ("bga_importer_window_rows", frozenset({("agent", "other")})) not in parsed
    assert ("bga_bridge_window_runs", frozenset({("agent", "imp_a")})) not in parsed


def test_bga_run_serves_metrics_while_it_ticks(sqlite_url: str, tmp_path: Path) -> None:
    """``bga run --metrics-port P``: the scheduler's own process answers on /metrics, and
    the ticks it runs show up there."""
    port = free_port()
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "graph.cli", "run", "--db", sqlite_url, "--interval", "0.5",
             "--metrics-port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "LANGSMITH_TRACING": "false"})
    parsed: dict = {}
    try:
        deadline = time.monotonic() + 120  # a bound on a hang, not a speed assertion
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                parsed = samples(_get(f"http://127.0.0.1:{port}/metrics"))
            except OSError:
                parsed = {}
            if parsed.get(("bga_ticks_total", frozenset()), 0) >= 2:
                break
            time.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert parsed.get(("bga_ticks_total", frozenset()), 0) >= 2, log.read_text()[-2000:]
    assert value(parsed, "bga_state_up") == 1
    assert value(parsed, "bga_last_tick_duration_seconds") > 0
    assert f"metrics: http://127.0.0.1:{port}/metrics" in log.read_text()


GRAFANA = Path(__file__).resolve().parents[2] / "samples" / "grafana" / "bga-dashboard.json"


async def test_grafana_dashboard_queries_only_exported_metrics(sqlite_url: str) -> None:
    """Every metric name a panel or variable of the shipped dashboard queries is one that
    ``/metrics`` serves (a renamed metric would leave an empty panel)."""
    doc = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in doc["templating"]["list"] if "definition" in v]
    used = set(re.findall(r"\bbga_[a-z0-9_]+", " ".join(exprs)))
    await write_fixture(sqlite_url)
    async with SharedState.open(sqlite_url, producer="test") as shared:
        await runner.tick(shared)  # the tick metrics exist once a tick has run
    async with metrics.serve(sqlite_url, 0) as port:
        served = {f.name for f in text_string_to_metric_families(await scrape(port))}
    served |= {f"{name}_total" for name in served}  # the parser drops a counter's _total
    assert used and used <= served, sorted(used - served)


def _query(prom: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        doc = json.loads(_get(url))
    except OSError:  # Prometheus still starting
        return []
    return doc["data"]["result"] if doc.get("status") == "success" else []


@pytest.mark.slow
async def test_real_prometheus_scrapes_a_written_value(sqlite_url: str, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is missing in CI (Debian package `prometheus`)")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    values, _, _ = await write_fixture(sqlite_url)
    async with metrics.serve(sqlite_url, 0) as port:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: bga\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom = free_port()
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            expr = f'bga_series_window_measurements{{series="{SERIES}"}}'
            result: list[dict] = []
            deadline = time.monotonic() + 120  # a bound on a hang, not a speed assertion
            while not result and time.monotonic() < deadline and proc.poll() is None:
                await asyncio.sleep(0.5)
                result = await asyncio.to_thread(_query, prom, expr)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert result, "Prometheus never returned the series"
    assert float(result[0]["value"][1]) == len(values)
    assert result[0]["metric"]["job"] == "bga"
