"""End to end in a real browser: `bga run` and `bga dashboard` in their own processes, writes
through the SharedState API, headless Chromium (Debian's package) driven by Playwright.

Needs /usr/bin/chromium (`make test` installs it) and the `playwright` package (test extra; its
own browser download is never used). Missing either: skipped here, a failure in CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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


def test_live_dashboard_in_chromium(tmp_path: Path, processes: Processes) -> None:
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
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
                has_text="probe_agent · probe_latency_ms · p95")
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
