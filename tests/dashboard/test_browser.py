"""End to end in a real browser: `bga run` and `bga dashboard` in their own processes, writes
through the SharedState API, headless Chromium (Debian's package) driven by Playwright.

Needs /usr/bin/chromium (`make test` installs it) and the `playwright` package (test extra; its
own browser download is never used). Missing either: skipped here, a failure in CI.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph import runner
from graph.demo import seed_sample_data
from state import PerformanceMetric, SharedState
from tests.dashboard.conftest import api

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 90.0
WAIT_MS = 45_000


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1") or os.environ.get("BGA_CI") == "1"


def require_browser() -> Any:
    """The Playwright sync API, or skip (fail in CI) with the reason."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing: install Debian's chromium (`make test` does)"
    else:
        try:
            from playwright import sync_api
        except ImportError:
            problem = "the playwright package is missing: pip install -e '.[test]'"
        else:
            return sync_api
    if in_ci():
        pytest.fail(f"browser test cannot run in CI: {problem}")
    pytest.skip(problem)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        env = {**os.environ, "LANGSMITH_TRACING": "false", "PYTHONUNBUFFERED": "1"}
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "graph.cli", *args], cwd=ROOT,
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def wait_healthy(procs: Processes, port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        assert procs.procs["dashboard"].poll() is None, procs.log("dashboard")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"dashboard did not come up:\n{procs.log('dashboard')}")


async def write_probe(shared: SharedState) -> str:
    """What the browser must find: an agent, a metric value, an error pattern, an insight."""
    await shared.register_agent("probe_agent", kind="probe", interval_s=3600)
    await shared.update_agent_heartbeat("probe_agent", {"status": "running"})
    await shared.add_performance_metrics(
        PerformanceMetric(source_agent="probe_agent", name="probe_latency_ms", value=123.4,
                          unit="ms") for _ in range(5))
    await shared.add_error_pattern("ProbeError", "probe failure in widget 42", "probe_agent")
    return await shared.add_insight("probe_alert", {"summary": "probe insight: queue stuck"},
                                    "probe_agent", priority="critical")


def cell(page: Any, text: str) -> Any:
    """A table cell: tables draw on a canvas; their cells live in an accessible, hidden grid."""
    return page.get_by_role("gridcell", name=text, exact=True, include_hidden=True)


def test_live_dashboard_in_chromium(tmp_path: Path, processes: Processes,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
    monkeypatch.setenv("BGA_DASHBOARD_ANONYMOUS", "operator")  # no login here (test_login.py)
    processes.start("ticker", "run", "--db", url, "--interval", "1")
    processes.start("dashboard", "dashboard", "--db", url, "--port", str(port))
    wait_healthy(processes, port)
    insight_id = api(url, write_probe, producer="browser-test")
    base = f"http://127.0.0.1:{port}"

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100},
                                    accept_downloads=True)
            page.set_default_timeout(WAIT_MS)

            page.goto(f"{base}/agents")  # a deep link on a fresh server: the app, not a bare page
            expect(page.get_by_test_id("stSidebar")).to_contain_text("Refresh every")
            card = page.get_by_test_id("stMetric").filter(
                has_text="probe_latency_ms")  # under **probe_agent**
            expect(card).to_contain_text("123.4 ms")
            expect(cell(page, "probe_agent")).to_have_count(1)
            page.screenshot(path=str(tmp_path / "agents.png"), full_page=True)

            page.goto(f"{base}/errors")
            expect(cell(page, "probe failure in widget <num>")).to_have_count(1)

            page.goto(f"{base}/insights")
            box = page.locator(f".st-key-insight_{insight_id}")
            expect(box).to_contain_text("probe insight: queue stuck")
            page.screenshot(path=str(tmp_path / "insights.png"), full_page=True)
            box.get_by_role("button", name="Acknowledge", exact=True).click()
            expect(page.get_by_text("Acknowledged 1 insight")).to_have_count(1)
            expect(box).to_have_count(0)  # no longer needs attention

            page.goto(f"{base}/export")
            with page.expect_download() as download:
                page.get_by_role("button", name="Download state JSON").click()
            exported = json.loads(Path(download.value.path()).read_text())
        finally:
            browser.close()

    [probe] = [i for i in api(url, SharedState.get_insights) if i["insight_id"] == insight_id]
    assert probe["acted_upon"] is True
    assert "probe_agent" in exported["channels"]["agents"]
    assert processes.procs["ticker"].poll() is None, processes.log("ticker")
    for shot in ("agents.png", "insights.png"):
        assert (tmp_path / shot).stat().st_size > 10_000


def test_missing_chromium_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("BGA_CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium is missing"):
        require_browser()
    for name, value in (("CI", "true"), ("BGA_CI", "1")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(pytest.fail.Exception, match="cannot run in CI"):
                require_browser()


# -- charts, outbound requests, a missing database, screenshots ----------------------------------

SCREENSHOTS = ROOT / "test-output" / "screenshots"
VIEWPORT = {"width": 1400, "height": 1000}
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")

# Each chart's marks relative to its plot frame (Streamlit draws Vega-Lite as SVG): the left
# and right edge of every point / bar as a fraction of the frame's width, and the x labels.
CHART_MARKS_JS = """(root) => Array.from(root.querySelectorAll('.stVegaLiteChart svg')).map(svg => {
  const frame = svg.querySelector('g.mark-group.role-frame path.background, path.background')
      .getBoundingClientRect();
  const rel = el => { const r = el.getBoundingClientRect();
      return [(r.left - frame.left) / frame.width, (r.right - frame.left) / frame.width]; };
  return {
    points: Array.from(svg.querySelectorAll('g.mark-symbol.role-mark path')).map(rel),
    bars: Array.from(svg.querySelectorAll('g.mark-rect.role-mark path')).map(rel),
    labels: Array.from(svg.querySelectorAll('g.role-axis')).filter(
        a => (a.getAttribute('aria-label') || '').startsWith('X-axis')).flatMap(
        a => Array.from(a.querySelectorAll('g.role-axis-label text')).map(t => t.textContent)),
  };
})"""


def redrawn(page: Any, done: Any) -> list[dict[str, Any]]:
    """The dense series' charts once ``done(charts)`` holds (a window change redraws them a
    moment after the click)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        charts = page.locator(".st-key-perf_chart_0").evaluate(CHART_MARKS_JS)
        if done(charts) or time.monotonic() > deadline:
            return charts
        page.wait_for_timeout(200)


async def write_chart_series(shared: SharedState, now: float) -> None:
    """``probe/a_dense_ms``: a sample every minute of the last two hours and every hour of the
    last 7 days; ``probe/b_sparse_ms``: two samples, 50 and 5 minutes ago."""
    await shared.register_agent("probe", kind="probe", interval_s=3600)
    await shared.update_agent_heartbeat("probe", {"status": "running"})
    stamps = [now - m * 60 - 1 for m in range(120)] + [now - h * 3600 - 1 for h in range(168)]
    await shared.add_performance_metrics(
        PerformanceMetric(source_agent="probe", name="a_dense_ms", value=10.0 + i % 7, unit="ms",
                          timestamp=ts) for i, ts in enumerate(stamps))
    await shared.add_performance_metrics(
        PerformanceMetric(source_agent="probe", name="b_sparse_ms", value=v, unit="ms",
                          timestamp=now - ago) for v, ago in ((5.0, 50 * 60), (9.0, 5 * 60)))
    await shared.flush()


def open_browser(sync_api: Any, pw: Any) -> tuple[Any, Any, list[str]]:
    """A 1400x1000 page that records every request leaving 127.0.0.1."""
    browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    outbound: list[str] = []
    page.on("request", lambda r: outbound.append(r.url) if not r.url.startswith(LOCAL) else None)
    return browser, page, outbound


def test_performance_charts_span_their_window(tmp_path: Path, processes: Processes) -> None:
    """Every window draws each bucket where its time is: a dense series fills the plot width,
    a sparse one's two points sit at 50 and 5 minutes ago; the x axis is labelled in time."""
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    now = time.time()
    api(url, lambda s: write_chart_series(s, now), producer="browser-test")
    port = free_port()
    processes.start("dashboard", "dashboard", "--db", url, "--port", str(port))
    wait_healthy(processes, port)

    with sync_api.sync_playwright() as pw:
        browser, page, outbound = open_browser(sync_api, pw)
        try:
            page.goto(f"http://127.0.0.1:{port}/performance")  # 1 h by default
            sparse = page.locator(".st-key-perf_chart_1")
            # two buckets x three quantiles
            expect(sparse.locator("g.mark-symbol.role-mark path")).to_have_count(6)
            points = sparse.evaluate(CHART_MARKS_JS)[0]["points"]
            middles = sorted({round((a + b) / 2, 2) for a, b in points})
            # minute buckets drawn at their middle; the window's start is rounded to a minute
            for got, want in zip(middles, (10.5 / 60, 55.5 / 60), strict=True):
                assert abs(got - want) < 0.03, (middles, want)
            # window -> x labels, and how many buckets it holds (minutes, hours, hours)
            for window, label, buckets, n in (("1 h", r"^\d\d:\d\d$", range(58, 62), 60),
                                              ("24 h", r"^\d\d:\d\d$", range(22, 26), 24),
                                              ("7 d", r"^\w{3} \d\d \w{3}$", range(160, 170),
                                               168)):
                page.get_by_role("radio", name=window, exact=True).click()
                expect(page.get_by_text(f"Summary, last {window}")).to_be_visible()
                charts = redrawn(page, lambda c, b=buckets: len(c) == 2
                                 and len(c[1]["bars"]) in b)
                quantiles, rate = charts
                # the first whole bucket starts up to one bucket (1/n of the width) after the
                # window's start, and its point sits half a bucket further in
                for marks, lead in ((quantiles["points"], 1.5 / n), (rate["bars"], 1.0 / n)):
                    left = min(m[0] for m in marks)
                    right = max(m[1] for m in marks)
                    assert left < lead + 0.01 and right > 0.95, (window, left, right)
                    assert len({round(m[0], 2) for m in marks}) > 20, window  # not one x
                assert len(quantiles["labels"]) >= 3, quantiles["labels"]
                assert all(re.match(label, t) for t in quantiles["labels"]), quantiles["labels"]
                page.screenshot(path=str(tmp_path / f"performance-{window}.png"))
        finally:
            browser.close()
    assert outbound == [], outbound
    assert "Traceback" not in processes.log("dashboard")


def test_a_missing_database_is_a_message_not_a_new_file(tmp_path: Path,
                                                       processes: Processes) -> None:
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    missing = tmp_path / "typo" / "stat.db"
    port = free_port()
    processes.start("dashboard", "dashboard", "--db", f"sqlite:///{missing}", "--port",
                    str(port))
    wait_healthy(processes, port)
    with sync_api.sync_playwright() as pw:
        browser, page, outbound = open_browser(sync_api, pw)
        try:
            for path in ("", "performance", "time_travel", "configuration"):
                page.goto(f"http://127.0.0.1:{port}/{path}")
                alert = page.get_by_test_id("stAlertContentError")
                expect(alert).to_contain_text("Cannot open the state database")
                expect(alert).to_contain_text(str(missing))
                expect(page.get_by_test_id("stException")).to_have_count(0)
        finally:
            browser.close()
    assert not missing.exists() and not missing.parent.exists()
    assert "Traceback" not in processes.log("dashboard"), processes.log("dashboard")
    assert outbound == []


async def write_demo(shared: SharedState, *, days: int = 7, ticks: int = 4) -> None:
    """What a user sees after a long demo: the demo's sample hour, a week of the same
    services' metrics and errors at explicit times (no waiting), then real ticks of the system
    graph (agents run, the bridge mirrors the ticks' own runs, insights are judged)."""
    rng = random.Random(3)
    now = time.time()
    await seed_sample_data(shared)
    metrics = []
    for hour in range(1, days * 24):
        ts = now - hour * 3600
        daily = 1.0 + 0.4 * math.sin(2 * math.pi * (ts % 86400) / 86400)  # a daily cycle
        metrics += [PerformanceMetric(source_agent="checkout_api", name="batch_latency_ms",
                                      unit="ms", value=rng.lognormvariate(3.0, 0.35) * daily,
                                      timestamp=ts + rng.uniform(0, 3000)) for _ in range(30)]
        metrics.append(PerformanceMetric(source_agent="checkout_api", name="requests_per_s",
                                         value=rng.gauss(24_000, 1_500) / daily, timestamp=ts))
        metrics.append(PerformanceMetric(source_agent="billing_worker", name="run_latency_ms",
                                         unit="ms", value=rng.lognormvariate(6.0, 0.6),
                                         timestamp=ts))
    await shared.add_performance_metrics(metrics)
    for day in range(days):
        await shared.add_error_pattern("TimeoutError", f"payment gateway timed out after "
                                       f"{5 + day} s", "billing_worker")
    for _ in range(ticks):
        await runner.tick(shared, wait=60)


PAGES = ("overview", "agents", "performance", "errors", "insights", "optimizations",
         "alerts", "configuration", "time_travel", "export")


def test_screenshot_every_page(tmp_path: Path, processes: Processes) -> None:
    """Every page at 1400x1000 after a long demo, saved under test-output/screenshots/ (look at
    them): each renders its title, no exception, no outbound request."""
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    api(url, write_demo, producer="demo")
    port = free_port()
    processes.start("dashboard", "dashboard", "--db", url, "--port", str(port))
    wait_healthy(processes, port)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser, page, outbound = open_browser(sync_api, pw)
        try:
            for name in PAGES:
                page.goto(f"http://127.0.0.1:{port}/{'' if name == 'overview' else name}")
                main = page.get_by_test_id("stMain")
                expect(main.get_by_role("heading", level=1)).to_be_visible()
                expect(main.get_by_test_id("stCaptionContainer").first).to_be_visible()
                if name == "performance":
                    expect(page.locator(".st-key-perf_chart_0 g.mark-symbol.role-mark path").first
                           ).to_be_attached()
                if name == "time_travel":
                    main.get_by_test_id("stSelectbox").first.click()
                    page.get_by_role("option").first.click()
                    expect(main.get_by_test_id("stMetric").first).to_be_visible()
                page.wait_for_load_state("networkidle")
                # drawn, not placeholders of a script still running
                expect(page.get_by_test_id("stStatusWidgetRunningIcon")).to_have_count(0)
                expect(page.get_by_test_id("stSkeleton")).to_have_count(0)
                expect(page.locator("[data-stale='true']")).to_have_count(0)
                expect(page.get_by_test_id("stException")).to_have_count(0)
                height = main.evaluate("m => m.scrollHeight")
                page.set_viewport_size({"width": 1400, "height": max(1000, int(height))})
                page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
                page.set_viewport_size(VIEWPORT)
        finally:
            browser.close()
    assert outbound == [], outbound
    assert "Traceback" not in processes.log("dashboard"), processes.log("dashboard")
    for name in PAGES:
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 20_000
