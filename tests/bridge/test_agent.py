"""The bridge agent's step: commits that survive cancellation, scheduling, insights, parsing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import nodes.langsmith_bridge.agent as bridge_agent
from nodes.agent_step import run_step
from nodes.base import AgentContext
from nodes.langsmith_bridge.base import Chunk, Limits, RunSource
from nodes.langsmith_bridge.records import Malformed, TraceRun, iso, parse_run, split_error, to_us
from nodes.langsmith_bridge.sync import sync
from state import SharedState
from state.config import AgentSection
from state.folder import FOLD_NODE, build_fold_graph
from state.traces import open_store
from tests.bridge.conftest import AGENT, agent_data, series

pytestmark = pytest.mark.usefixtures("no_langsmith_env")


def trace_run(i: int, latency_ms: int = 100, **kw: Any) -> TraceRun:
    start_us = int((time.time() - 300 + i) * 1e6)
    return TraceRun(id=f"run-{i}", name="job", run_type="chain", project="p",
                    start_us=start_us, end_us=start_us + latency_ms * 1000, **kw)


class HangingSource(RunSource):
    """Yields ``batches`` chunks of runs, then waits forever (until the step is cancelled)."""

    kind = "test"

    def __init__(self, runs: list[TraceRun], per_chunk: int, chunks: int) -> None:
        self.key = "test"
        self.runs = runs
        self.per_chunk = per_chunk
        self.chunks = chunks

    async def poll(self, cursor: dict[str, Any] | None, limits: Limits
                   ) -> AsyncIterator[Chunk]:
        pos = int((cursor or {}).get("pos", 0))
        for _ in range(self.chunks):
            batch = self.runs[pos:pos + self.per_chunk]
            if not batch:
                return
            pos += len(batch)
            yield Chunk(cursor={"pos": pos}, runs=batch, read=len(batch))
        await asyncio.Event().wait()


async def step_and_commit(shared: SharedState, budget_s: float) -> dict[str, Any]:
    """One ``run_step`` of the bridge, committed like ``bga bridge sync`` commits it."""
    graph = build_fold_graph(shared.backend)
    values = dict((await graph.aget_state(shared.config)).values)
    data = ((values.get("agent_data") or {}).get(AGENT) or {}).get("value") or {}
    section = AgentSection(kind=AGENT, budget_s=budget_s, options={"force": True})
    task = {"agent_id": AGENT, "section": section.model_dump(by_alias=True), "data": data,
            "tick": 0}
    update = await run_step(task, shared.backend.url, shared.clock)
    await graph.aupdate_state(shared.config, update, as_node=FOLD_NODE)
    return update


async def test_a_step_cancelled_mid_poll_keeps_metrics_and_cursor_together(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = [trace_run(i) for i in range(50)]
    sources = iter([HangingSource(runs, per_chunk=20, chunks=1),   # then hangs: cancelled
                    HangingSource(runs, per_chunk=20, chunks=5)])
    monkeypatch.setattr(bridge_agent, "make_source", lambda *args: next(sources))
    async with SharedState.open(db_url, producer="tests") as shared:
        update = await step_and_commit(shared, budget_s=0.3)
        hb = update["agents"][AGENT]["hb"]
        assert hb["status"] == "timeout"
        assert (await agent_data(shared))["cursors"]["test"] == {"pos": 20}
        assert (await series(shared))[f"{AGENT}/p/job/latency_ms"]["count"] == 20
        await step_and_commit(shared, budget_s=5.0)
        assert (await agent_data(shared))["cursors"]["test"] == {"pos": 50}
        assert (await series(shared))[f"{AGENT}/p/job/latency_ms"]["count"] == 50


async def test_poll_interval_gates_polling_and_force_overrides_it(db_url: str) -> None:
    async with (SharedState.open(db_url, producer="tests") as shared,
                open_store(shared.backend.url) as store):
        now = time.time()
        row = {"id": "r1", "project": "local", "name": "job", "run_type": "chain",
               "start_time": now - 2, "end_time": now - 1, "status": "success",
               "recorded_at": now}
        await store.append([row])
        first = await sync(shared)
        assert first.report.mirrored == 1
        await store.append([{**row, "id": "r2"}])
        data = await agent_data(shared)
        settings = bridge_agent.BridgeSettings(poll_interval_s=60)
        ctx = AgentContext(AGENT, data=data, database_url=shared.backend.url)
        await bridge_agent.LangSmithBridgeAgent(AGENT, settings).step(ctx)
        assert ctx.update().get("metrics") is None  # not due: nothing read
        assert 50 < ctx.progress["next_poll_in_s"] <= 60
        forced = bridge_agent.BridgeSettings(poll_interval_s=60, force=True)
        ctx = AgentContext(AGENT, data=data, database_url=shared.backend.url)
        await bridge_agent.LangSmithBridgeAgent(AGENT, forced).step(ctx)
        assert ctx.data["last"]["mirrored"] == 1


async def test_insights_carry_evidence_and_example_runs(db_url: str, tmp_path: Path) -> None:
    now = float(int(time.time()))
    lines = []
    for i in range(30):  # baseline: 40-30 minutes ago, fast, cheap, no errors
        start = now - 2400 + i * 20
        lines.append(_run("search", start, 100, total_cost=0.001, total_tokens=100))
    slow_ids = []
    for i in range(30):  # current window: slow, expensive, a third failing
        start = now - 300 + i * 5
        run = _run("search", start, 400 + i, total_cost=0.004, total_tokens=400,
                   error=f"KeyError('doc {i}')" if i % 3 == 0 else None)
        slow_ids.append(run["id"])
        lines.append(run)
    path = tmp_path / "search.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    async with SharedState.open(db_url, producer="tests") as shared:
        await sync(shared, path=path, project="app")
        found = {i["insight_type"]: i for i in await shared.get_insights()
                 if i["source_agent"] == AGENT}
        lat = found["latency_regression"]["content"]
        assert lat["series"] == f"{AGENT}/app/search/latency_ms"
        assert lat["baseline_count"] == 30 and lat["current_count"] == 30
        assert lat["ratio"] >= 3.5
        assert [e["run_id"] for e in lat["examples"]] == slow_ids[::-1][:3]  # slowest first
        err = found["error_rate_spike"]["content"]
        assert (err["current_errors"], err["baseline_error_rate"]) == (10, 0.0)
        assert err["current_error_rate"] == pytest.approx(1 / 3, abs=1e-3)
        assert found["cost_spike"]["content"]["ratio"] == pytest.approx(4.0)
        assert found["token_spike"]["content"]["current_mean_per_run"] == 400
        assert found["latency_regression"]["priority"] == "high"
        assert found["new_failure_mode"]["content"]["count"] == 10


def _run(name: str, start: float, latency_ms: int, **extra: Any) -> dict[str, Any]:
    rid = str(uuid.uuid4())
    return {"id": rid, "name": name, "run_type": "chain", "start_time": iso(int(start * 1e6)),
            "end_time": iso(int(start * 1e6) + latency_ms * 1000), "trace_id": rid,
            "status": "error" if extra.get("error") else "success", **extra}


# -- parsing -------------------------------------------------------------------------------------


def test_parse_run_reads_v1_v2_and_local_shapes() -> None:
    now = time.time()
    v1 = parse_run({"id": "a", "name": "n", "run_type": "llm",
                    "start_time": "2026-01-01T00:00:00.250000",
                    "end_time": "2026-01-01T00:00:01.750000", "parent_run_id": "p",
                    "total_cost": "0.25", "first_token_time": "2026-01-01T00:00:00.500000"},
                   project="proj", now=now, host_url="https://smith.example")
    assert (v1.latency_ms, v1.cost, v1.first_token_s, v1.parent_id) == (1500.0, 0.25, 0.25, "p")
    v2 = parse_run({"id": "b", "name": "n", "run_type": "TOOL", "status": "ERROR",
                    "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:02Z",
                    "parent_run_ids": ["root", "mid"], "app_path": "/o/t/r/b"},
                   project="proj", now=now, host_url="https://smith.example")
    assert (v2.run_type, v2.parent_id, v2.url) == ("tool", "mid", "https://smith.example/o/t/r/b")
    assert v2.error and split_error(v2.error)[0] == "RunError"
    local = parse_run({"id": "c", "name": "n", "run_type": "chain", "start_time": 100.5,
                       "end_time": 101.0, "project": "x"}, project="local", now=now)
    assert (local.latency_ms, local.is_root, local.finished) == (500.0, True, True)
    running = parse_run({"id": "d", "name": "n", "run_type": "chain", "start_time": 100.0,
                         "end_time": None}, project="p", now=now)
    assert not running.finished
    assert iso(to_us("2026-03-04T05:06:07.890123", "t")) == "2026-03-04T05:06:07.890123+00:00"


@pytest.mark.parametrize(("record", "reason"), [
    ({"name": "n", "run_type": "chain", "start_time": 1.0}, "id is missing"),
    ({"id": "x", "run_type": "chain", "start_time": 1.0}, "name is missing"),
    ({"id": "x", "name": "n", "run_type": "chain"}, "start_time must be a time, got NoneType"),
    ({"id": "x", "name": "n", "run_type": "chain", "start_time": 5.0, "end_time": 4.0},
     "end_time is before start_time"),
    ({"id": "x", "name": "n", "run_type": "chain", "start_time": 5.0,
      "end_time": 4e10}, "end_time is in the future"),
    ({"id": "x", "name": "n", "run_type": "chain", "start_time": 5.0, "end_time": 6.0,
      "prompt_tokens": float("nan")}, "prompt_tokens must be a finite number between 0"),
    ({"id": "x", "name": "n", "run_type": "chain", "start_time": 5.0, "error": 42},
     "error must be a string, got int"),
])
def test_parse_run_rejects_with_a_reason(record: dict[str, Any], reason: str) -> None:
    with pytest.raises(Malformed) as info:
        parse_run(record, project="p", now=time.time())
    assert str(info.value).startswith(reason)


@pytest.mark.parametrize(("error", "expected"), [
    ("ValueError('bad email 42')Traceback (most recent call last):\n  ...",
     ("ValueError", "bad email 42")),
    ("httpx.ReadTimeout: timed out after 30 s", ("ReadTimeout", "timed out after 30 s")),
    ('openai.RateLimitError("Rate limit reached")', ("RateLimitError", "Rate limit reached")),
    ("something odd happened", ("RunError", "something odd happened")),
])
def test_split_error(error: str, expected: tuple[str, str]) -> None:
    assert split_error(error) == expected
