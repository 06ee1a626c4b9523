"""A state written through the real SharedState API, for the dashboard tests: every page test
runs on a SQLite file and on a PostgreSQL schema (skipped without a server, required in CI).

Also the one way the browser tests (and ``bench/dashboard_load.py``) start things: ``bga``
processes with their logs (``Processes``), a dashboard that answers (``wait_healthy``), and
headless Chromium, Debian's package driven by Playwright (``require_browser``,
``launch_chromium``, ``open_page``; Playwright's own browser download is never used).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from graph import runner
from state import OptimizationRecord, PerformanceMetric, SharedState
from tests.conftest import server_url

T = TypeVar("T")


def api(url: str, fn: Callable[[SharedState], Awaitable[T]], *, producer: str = "test") -> T:
    """Run ``fn(shared)`` on a fresh SharedState of ``url`` (tests here are synchronous)."""

    async def go() -> T:
        async with SharedState.open(url, producer=producer) as shared:
            return await fn(shared)

    return asyncio.run(go())


@dataclass
class StateFixture:
    url: str
    insight_ids: dict[str, str] = field(default_factory=dict)
    first_checkpoint_summary: dict[str, Any] = field(default_factory=dict)


async def write_state(shared: SharedState) -> dict[str, str]:
    """Two agents, one metric series, two error patterns, three insights (one acted upon), two
    optimization records; then a tick, so health and the last tick are in the state."""
    await shared.register_agent("importer", kind="profile_import", interval_s=3600)
    await shared.register_agent("bridge", kind="langsmith_bridge", interval_s=3600)
    await shared.update_agent_heartbeat("importer", {"status": "running"})
    await shared.update_agent_heartbeat("bridge", {"status": "running",
                                                   "last_error": "TimeoutError: slow upstream"})
    await shared.add_performance_metrics(
        PerformanceMetric(source_agent="importer", name="latency_ms", value=float(v), unit="ms")
        for v in range(1, 101))
    for i in range(7):
        await shared.add_error_pattern("ValueError", f"invalid email 'u{i}@' on line {i}",
                                       "importer")
    for i in range(2):
        await shared.add_error_pattern("TimeoutError", f"request timed out after {i + 5} s",
                                       "bridge")
    ids = {
        "high": await shared.add_insight("latency_regression",
                                         {"summary": "p95 latency up 80 %", "p95_ms": 900},
                                         "coordinator", priority="high"),
        "medium": await shared.add_insight("recurring_error", {"summary": "7 bad e-mails"},
                                           "coordinator", priority="medium"),
        "critical": await shared.add_insight("disk_full", {"summary": "disk 99 % full"},
                                             "coordinator", priority="critical"),
    }
    assert await shared.mark_insight_acted_upon(ids["medium"])
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="tune_batch_size", target="importer", before={"batch_size": 500},
        after={"batch_size": 1000}, outcome="kept"))
    await shared.add_optimization_record(OptimizationRecord(
        optimization_type="tune_page_size", target="bridge", before={"page_size": 50},
        after={"page_size": 100}, outcome="rolled_back", success=False))
    await runner.tick(shared, wait=30)
    return ids


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def page_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database the dashboard reads: a SQLite file, a PostgreSQL schema or a Redis
    key prefix (``needs_sql`` tests skip Redis, saying why)."""
    needs_sql = request.node.get_closest_marker("needs_sql")
    if request.param == "redis" and needs_sql is not None:
        pytest.skip(f"not on Redis: {needs_sql.args[0]}")
    if request.param in ("postgres", "redis"):
        with server_url(request.param) as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def state_db(page_db_url: str) -> StateFixture:
    """A state with two checkpoints; the second adds an insight after the first."""
    url = page_db_url
    fixture = StateFixture(url)

    async def build(shared: SharedState) -> None:
        fixture.insight_ids = await write_state(shared)
        fixture.first_checkpoint_summary = await shared.get_system_state()
        await shared.add_insight("late_insight", {"summary": "written after checkpoint 1"},
                                 "coordinator", priority="high")
        await shared.flush()

    api(url, build)
    return fixture


@pytest.fixture
def empty_db(page_db_url: str) -> str:
    """A database with its tables and nothing else (the dashboard never creates one)."""

    async def nothing(shared: SharedState) -> None:
        return None

    api(page_db_url, nothing)
    return page_db_url


# -- processes and the browser (the browser tests and bench/dashboard_load.py) -----------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1400, "height": 1000}
STARTUP_TIMEOUT_S = 90.0
WAIT_MS = 45_000
# what a page may load: the dashboard itself (no font, favicon or script from elsewhere)
LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:")


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


def launch_chromium(pw: Any, *extra_args: str) -> Any:
    """Headless Chromium (``/usr/bin/chromium``) from a ``sync_playwright()`` context, with
    ``extra_args`` after the usual ones."""
    return pw.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args])


def open_page(browser: Any, outbound: list[str] | None = None, **options: Any) -> Any:
    """A new page (a new dashboard session) at 1400x1000 unless ``viewport`` says otherwise;
    every request leaving 127.0.0.1 is appended to ``outbound``."""
    page = browser.new_page(**{"viewport": VIEWPORT, **options})
    page.set_default_timeout(WAIT_MS)
    if outbound is not None:
        page.on("request", lambda r: outbound.append(r.url)
                if not r.url.startswith(LOCAL) else None)
    return page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Processes:
    """``bga`` commands in their own processes, each logging to ``log_dir/NAME.log``."""

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


def dashboard_up(procs: Processes, port: int) -> str | None:
    """Wait until ``procs``' dashboard answers on ``port``; None, or why it did not."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if procs.procs["dashboard"].poll() is not None:
            return f"dashboard exited:\n{procs.log('dashboard')}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                        timeout=2) as reply:
                if reply.status == 200:
                    return None
        except OSError:
            time.sleep(0.25)
    return f"dashboard did not come up:\n{procs.log('dashboard')}"


def wait_healthy(procs: Processes, port: int) -> None:
    problem = dashboard_up(procs, port)
    if problem:
        pytest.fail(problem)
