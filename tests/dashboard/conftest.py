"""A state written through the real SharedState API, for the dashboard tests: every page test
runs on a SQLite file and on a PostgreSQL schema (skipped without a server, required in CI)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from graph import runner
from state import OptimizationRecord, PerformanceMetric, SharedState
from tests.conftest import postgres_schema

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


@pytest.fixture(params=["sqlite", "postgres"])
def page_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database the dashboard reads: a SQLite file or a PostgreSQL schema."""
    if request.param == "postgres":
        with postgres_schema() as url:
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
