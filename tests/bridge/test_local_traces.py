"""The local trace store end to end, and LangSmith tracing that cannot reach its endpoint.

The system graph runs with the local tracer on (``graph.runner.tick``); the bridge, with no
LangSmith key, mirrors what the tracer recorded; the metrics must match the recorded runs.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import langsmith.run_trees as ls_run_trees
import langsmith.utils as ls_utils
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from graph.runner import tick
from nodes.base import Agent, AgentContext
from nodes.langsmith_bridge.sync import sync
from state import SharedState
from state.traces import open_store
from tests.agents.example import ECHO, FAILING
from tests.bridge.conftest import AGENT, agent_data, series

LLM_AGENT = "tests.bridge.test_local_traces:LLMAgent"


class LLMAgent(Agent):
    """Calls a (fake) chat model through LangChain: its run carries token usage."""

    kind = "llm_agent"

    async def step(self, ctx: AgentContext) -> None:
        model = GenericFakeChatModel(messages=iter([AIMessage(
            content="hello", usage_metadata={"input_tokens": 7, "output_tokens": 3,
                                             "total_tokens": 10})]))
        await model.ainvoke("hi")
        ctx.metric("calls", 1)


def expected_from_store(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per series label: runs, summed latency (ms), errors, tokens, from the raw store rows.

    Latencies are whole microseconds, as the bridge takes them (``TraceRun.latency_ms``): from
    the raw float seconds the sum of a few runs could be 1 µs off each."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        label = f"local/{r['name']}" if r["parent_run_id"] is None \
            else f"local/{r['run_type']}:{r['name']}"
        e = out[label]
        e["count"] += 1
        e["latency"] += (round(r["end_time"] * 1e6) - round(r["start_time"] * 1e6)) / 1000
        e["errors"] += r["status"] == "error"
        if r["total_tokens"] is not None:
            e["tokens"] += r["total_tokens"]
    return out


@pytest.mark.usefixtures("no_langsmith_env")
async def test_system_graph_runs_recorded_then_mirrored_match(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        await shared.update_config({"agents": {
            "echo": {"class": ECHO, "interval_s": 0.001},
            "failing": {"class": FAILING, "interval_s": 0.001},
            "llm": {"class": LLM_AGENT, "interval_s": 0.001},
        }})
        for _ in range(3):
            await tick(shared)
        async with open_store(shared.backend.url) as store:
            rows = await store.read_after(0, 10_000)
        assert {r["name"] for r in rows} >= {"system_tick", "fold_inbox", "plan", "run_agent",
                                             "review", "optimize", "agent:echo",
                                             "agent:failing", "GenericFakeChatModel"}
        assert sum(r["parent_run_id"] is None for r in rows) == 3  # one trace per tick
        llm_rows = [r for r in rows if r["run_type"] == "llm"]
        assert len(llm_rows) == 3 and all(r["total_tokens"] == 10 for r in llm_rows)
        assert all(r["status"] == "error" and "boom" in r["error"]
                   for r in rows if r["name"] == "agent:failing")

        result = await sync(shared)  # the bridge, reading the local store (no key set)
        assert result.error is None and result.source["kind"] == "local"
        # the bridge's own step in tick 1 ran before any run was recorded: all is mirrored now
        assert result.report.mirrored == len(rows)
        assert (await agent_data(shared))["cursors"]["local"]["seq"] == rows[-1]["seq"]

        found = await series(shared)
        expected = expected_from_store(rows)
        for label, e in expected.items():
            lat = found[f"{AGENT}/{label}/latency_ms"]
            assert lat["count"] == e["count"], label
            assert lat["mean"] * lat["count"] == pytest.approx(e["latency"], rel=1e-9, abs=1e-6)
            err = found[f"{AGENT}/{label}/error"]
            assert err["mean"] * err["count"] == e["errors"], label
        tokens = found[f"{AGENT}/local/llm:GenericFakeChatModel/total_tokens"]
        assert (tokens["count"], tokens["mean"]) == (3, 10.0)
        [boom] = [p for p in await shared.get_error_patterns(error_type="RuntimeError")]
        assert "agent:failing" in boom["source_agents"]  # the run name, same fingerprint
        assert "failing" in boom["source_agents"]  # as the agent's own report of the error

        await tick(shared)
        again = await sync(shared)  # only the runs of the tick in between
        async with open_store(shared.backend.url) as store:
            new_rows = await store.read_after(rows[-1]["seq"], 10_000)
        assert again.report.mirrored == len(new_rows) > 0


# -- LangSmith endpoints that do not answer ----------------------------------------------------


class Blackhole:
    """Accepts connections and reads requests but answers none until released."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.requests: list[bytes] = []
        self.answered = 0
        self.release = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                head = conn.recv(65536)
                if not head:
                    return
                with self.lock:
                    self.requests.append(head.split(b"\r\n", 1)[0])
                self.release.wait()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                with self.lock:
                    self.answered += 1
                return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.release.set()
        self.sock.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()


@pytest.fixture
def tracing_to(blackhole: Blackhole, monkeypatch: pytest.MonkeyPatch) -> Iterator[Blackhole]:
    """LangSmith tracing on, pointed at an endpoint that never answers."""
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", blackhole.url)
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2_pt_0000000000000000_tracing_test")
    monkeypatch.setenv("LANGSMITH_PROJECT", "bga-tests")
    monkeypatch.setattr(ls_run_trees, "_CLIENT", None)
    ls_utils.get_env_var.cache_clear()
    try:
        yield blackhole
    finally:
        client = ls_run_trees._CLIENT
        blackhole.release.set()  # let the client's background thread drain and exit quickly
        if client is not None:
            client.flush()
        ls_utils.get_env_var.cache_clear()


async def test_tracing_to_an_unreachable_endpoint_never_breaks_a_tick(
        sqlite_url: str, tracing_to: Blackhole) -> None:
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        await shared.update_config({"agents": {
            "echo": {"class": ECHO, "interval_s": 0.001},
            AGENT: {"options": {"source": "local"}}}})
        reports = [await tick(shared) for _ in range(3)]
        assert [r.events_folded for r in reports] == [1, 0, 0]
        agents = {a["agent_id"]: a for a in await shared.get_agents()}
        assert agents["echo"]["heartbeats"] == 3
        assert agents["echo"]["reported_status"] == "ok"
        assert (await shared.get_system_state())["stats"]["ticks"] == 3
        async with open_store(sqlite_url) as store:
            rows = await store.read_after(0, 10_000)
        assert sum(r["name"] == "system_tick" for r in rows) == 3  # local tracing unaffected
        for _ in range(200):  # the LangSmith tracer did try to reach its endpoint ...
            if tracing_to.requests:
                break
            await asyncio.sleep(0.05)
        assert tracing_to.requests
        assert tracing_to.answered == 0  # ... and every tick finished without an answer


async def test_bridge_polling_an_unreachable_langsmith_fails_within_budget_then_backs_off(
        sqlite_url: str, blackhole: Blackhole, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGSMITH_API_KEY", "lsv2_pt_0000000000000000_bridge_test")
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("BGA_LANGSMITH_PROJECTS", "proj-a")
    monkeypatch.setenv("BGA_LANGSMITH_ENDPOINTS", blackhole.url)
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        await shared.update_config({"agents": {
            "echo": {"class": ECHO, "interval_s": 0.001},
            AGENT: {"interval_s": 0.001, "budget_s": 1.0,
                    "options": {"api_url": blackhole.url, "timeout_s": 30.0}}}})
        await tick(shared)
        agents = {a["agent_id"]: a for a in await shared.get_agents()}
        assert agents["echo"]["reported_status"] == "ok"  # the other agents' work landed
        bridge = agents[AGENT]
        assert bridge["reported_status"] == "error"
        assert "timeout" in bridge["heartbeat"]["last_error"]
        data = await agent_data(shared)
        assert data["failures"] == 1 and data["retry_at"] > data["last_poll_at"]
        seen = len(blackhole.requests)
        assert seen >= 1
        await tick(shared)  # due again, but backing off: no new request, no wait
        await tick(shared)
        assert len(blackhole.requests) == seen
        assert {a["agent_id"]: a for a in await shared.get_agents()}[AGENT]["heartbeats"] == 3
