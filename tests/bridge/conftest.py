"""Fixtures of the LangSmith Bridge tests: a fake LangSmith server and a shared state."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from state import SharedState
from tests.bridge.fake_langsmith import API_KEY, FakeLangSmith

AGENT = "langsmith_bridge"


def allow_endpoints(monkeypatch: pytest.MonkeyPatch, *servers: FakeLangSmith) -> None:
    """The operator lists fake servers as endpoints the key may go to (state.policy)."""
    import os

    listed = [u for u in os.environ.get("BGA_LANGSMITH_ENDPOINTS", "").split(",") if u]
    monkeypatch.setenv("BGA_LANGSMITH_ENDPOINTS", ",".join([*listed, *(s.url for s in servers)]))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLangSmith]:
    server = FakeLangSmith().start()
    server.add_project("proj-a")
    allow_endpoints(monkeypatch, server)
    try:
        yield server
    finally:
        server.stop()


API_VERSIONS = ["v1", "v2"]


@pytest.fixture(params=API_VERSIONS)
def server(request: pytest.FixtureRequest,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLangSmith]:
    """A fake LangSmith whose /info makes the SDK (and so the bridge) pick v1, then v2."""
    made = FakeLangSmith.v2() if request.param == "v2" else FakeLangSmith()
    made.api = request.param  # type: ignore[attr-defined]
    made.start()
    made.add_project("proj-a")
    allow_endpoints(monkeypatch, made)
    try:
        yield made
    finally:
        made.stop()


def query_path(server: FakeLangSmith) -> str:
    return "/api/v2/runs/query" if getattr(server, "api", "v1") == "v2" else "/runs/query"


@pytest.fixture
def langsmith_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """A LangSmith key and project list in the environment (never in the state)."""
    monkeypatch.setenv("LANGSMITH_API_KEY", API_KEY)
    monkeypatch.setenv("BGA_LANGSMITH_PROJECTS", "proj-a")
    monkeypatch.delenv("LANGSMITH_ENDPOINT", raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    return API_KEY


@pytest.fixture
def no_langsmith_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "BGA_LANGSMITH_PROJECTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")


@pytest.fixture
async def shared(db_url: str) -> AsyncIterator[SharedState]:
    async with SharedState.open(db_url, producer="tests") as s:
        yield s


async def configure(shared: SharedState, **options: Any) -> None:
    await shared.update_config({"agents": {AGENT: {"options": options}}})


def api_options(fake: FakeLangSmith, **extra: Any) -> dict[str, Any]:
    """Bridge options pointing at the fake server, with short waits for the tests."""
    return {"api_url": fake.url, "settle_s": 0, "backfill_s": 7_200, "backoff_base_s": 0.05,
            "timeout_s": 5.0, **extra}


async def series(shared: SharedState, hours: int = 1) -> dict[str, dict[str, Any]]:
    perf = await shared.get_performance_summary(hours=hours)
    return {k: v for k, v in perf["series"].items() if k.startswith(f"{AGENT}/")}


async def agent_data(shared: SharedState) -> dict[str, Any]:
    return ((await shared.read()).get("agent_data", {}).get(AGENT) or {}).get("value") or {}


def ago(seconds: float) -> float:
    return time.time() - seconds
