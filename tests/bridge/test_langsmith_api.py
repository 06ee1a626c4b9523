"""LangSmithSource through the real ``langsmith.Client`` against a local LangSmith server.

(The faults, late runs and feedback, on v1 and v2 alike, are in ``test_faults.py``.)

Each test scripts the server (runs, faults), runs mirroring passes through
``nodes.langsmith_bridge.sync.sync`` (the agent's own step, committed like a tick) and checks
the shared state: every run counted once, whatever the server does between and within polls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from nodes.langsmith_bridge.sync import sync
from state import SharedState
from state.traces import open_store
from tests.bridge.conftest import (
    AGENT,
    agent_data,
    ago,
    allow_endpoints,
    api_options,
    configure,
    series,
)
from tests.bridge.fake_langsmith import FakeLangSmith, iso, parse_time

pytestmark = pytest.mark.usefixtures("langsmith_env")

LATENCY = "langsmith_bridge/proj-a/agent/latency_ms"
ERRORS = "langsmith_bridge/proj-a/agent/error"


def add_runs(fake: FakeLangSmith, n: int, *, first: float, name: str = "agent",
             spacing: float = 1.0, latency: float = 0.5) -> list[dict[str, Any]]:
    return [fake.run("proj-a", name=name, start=first + i * spacing, latency_s=latency)
            for i in range(n)]


def window_queries(fake: FakeLangSmith) -> list[dict[str, Any]]:
    """Bodies of the run-window queries (not the by-id re-reads of runs in progress)."""
    return [s.body for s in fake.requests("POST", "/runs/query") if "id" not in s.body]


async def test_pagination_reads_every_page_and_counts_each_run_once(
        shared: SharedState, fake: FakeLangSmith) -> None:
    add_runs(fake, 250, first=ago(1800))
    await configure(shared, **api_options(fake, child_run_types=[]))
    result = await sync(shared)
    assert result.error is None
    assert (result.report.read, result.report.mirrored, result.report.skipped) == (250, 250, 0)

    pages = window_queries(fake)
    assert len(pages) == 3  # 100 + 100 + 50, following cursors.next
    assert "cursor" not in pages[0] and pages[1]["cursor"] and pages[2]["cursor"]
    assert all({k: v for k, v in p.items() if k != "cursor"} ==
               {k: v for k, v in pages[0].items() if k != "cursor"} for p in pages)
    first = pages[0]
    assert first["limit"] == 100 and first["order"] == "asc" and first["is_root"] is True
    assert "inputs" not in first["select"] and "outputs" not in first["select"]
    assert {s.path for s in fake.seen} >= {"/info", "/sessions", "/runs/query"}
    assert all(s.headers["x-api-key"] for s in fake.seen)

    found = await series(shared)
    assert found[LATENCY]["count"] == 250
    assert found[LATENCY]["mean"] == pytest.approx(500.0)
    assert found[ERRORS]["count"] == 250 and found[ERRORS]["mean"] == 0.0
    assert found["langsmith_bridge/proj-a/(project)/run_count"]["max"] == 250

    again = await sync(shared)  # nothing new: nothing counted twice
    assert (again.report.mirrored, again.error) == (0, None)
    assert (await series(shared))[LATENCY]["count"] == 250


async def test_page_size_from_config_and_new_runs_between_polls(
        shared: SharedState, fake: FakeLangSmith) -> None:
    add_runs(fake, 30, first=ago(3000))
    await shared.update_config({"agents": {AGENT: {"page_size": 7}}})
    await configure(shared, **api_options(fake, child_run_types=[]))
    assert (await sync(shared)).report.mirrored == 30
    assert {b["limit"] for b in window_queries(fake)} == {7}
    # started after the first poll, ended before the read (a run ending in the future lands
    # in a bucket the last hour does not reach yet when it is in the next minute)
    add_runs(fake, 12, first=time.time(), spacing=1e-4, latency=0.01)
    await asyncio.sleep(0.05)
    second = await sync(shared)
    assert (second.report.read, second.report.mirrored) == (12, 12)
    assert (await series(shared))[LATENCY]["count"] == 42


async def test_overlapping_pages_and_polls_are_skipped_not_double_counted(
        shared: SharedState, monkeypatch: pytest.MonkeyPatch) -> None:
    sloppy = FakeLangSmith(overlap_s=900).start()  # also returns runs from 15 min too early
    allow_endpoints(monkeypatch, sloppy)
    try:
        sloppy.add_project("proj-a")
        first = [sloppy.run("proj-a", name="agent", start=ago(600) + i, latency_s=0.25)
                 for i in range(40)]
        await configure(shared, **api_options(sloppy, child_run_types=[]))
        assert (await sync(shared)).report.mirrored == 40
        later = [sloppy.run("proj-a", name="agent", start=time.time() + i * 1e-4,
                            latency_s=0.25) for i in range(10)]
        await asyncio.sleep(0.05)
        second = await sync(shared)
        assert second.report.mirrored == 10
        assert second.report.skipped == 40  # the overlap, read again and recognised
        found = await series(shared)
        assert found[LATENCY]["count"] == len(first) + len(later)
    finally:
        sloppy.stop()


async def test_run_finishing_late_is_mirrored_once_when_it_ends(
        shared: SharedState, fake: FakeLangSmith) -> None:
    add_runs(fake, 5, first=ago(900))
    running = fake.run("proj-a", name="agent", start=ago(600), latency_s=None)
    await configure(shared, **api_options(fake, child_run_types=[]))
    first = await sync(shared)
    assert (first.report.mirrored, first.report.in_progress) == (5, 1)
    scopes = (await agent_data(shared))["cursors"][f"langsmith:{fake.url}"]["s"]
    assert running["id"] in scopes["proj-a#root"]["o"]

    assert (await sync(shared)).report.mirrored == 0  # still running: not counted yet
    fake.put("proj-a", {**running, "status": "success",  # it ended 42 s after it started
                        "end_time": iso(parse_time(running["start_time"]) + 42.0)})
    third = await sync(shared)
    assert third.report.mirrored == 1
    by_id = [s.body for s in fake.requests("POST", "/runs/query") if "id" in s.body]
    assert by_id and by_id[-1]["id"] == [running["id"]]
    found = await series(shared)
    assert found[LATENCY]["count"] == 6
    assert found[LATENCY]["max"] == pytest.approx(42_000.0)
    assert running["id"] not in (await agent_data(shared))["cursors"][
        f"langsmith:{fake.url}"]["s"]["proj-a#root"]["o"]
    assert (await sync(shared)).report.mirrored == 0


async def test_request_hanging_past_the_budget_commits_only_whole_pages(
        shared: SharedState, fake: FakeLangSmith) -> None:
    add_runs(fake, 250, first=ago(2000))
    await configure(shared, **api_options(fake, child_run_types=[]))
    fake.fail("POST", "/runs/query", delay=3.0, skip=1)  # page 2 hangs beyond the budget
    cut = await sync(shared, budget_s=1.0)  # requests never outlive the step's deadline
    assert cut.error and "timeout" in cut.error
    assert cut.report.mirrored == 100
    assert (await series(shared))[LATENCY]["count"] == 100
    rest = await sync(shared)
    assert rest.report.mirrored == 150
    assert (await series(shared))[LATENCY]["count"] == 250


async def test_malformed_records_are_quarantined_with_a_reason(
        shared: SharedState, fake: FakeLangSmith) -> None:
    good = add_runs(fake, 10, first=ago(1500))
    base = good[0]
    bad = [
        {**base, "id": "bad-start", "start_time": "yesterday-ish"},
        {**base, "id": "bad-order", "end_time": "2001-01-01T00:00:00"},
        {**base, "id": "bad-tokens", "total_tokens": -5},
        {**base, "id": "bad-type", "run_type": "spaceship"},
        {**base, "id": "bad-cost", "total_cost": "lots"},
        {**base, "id": "", "name": "no id"},
    ]
    fake.put("proj-a", *bad)
    await configure(shared, **api_options(fake, child_run_types=[]))
    result = await sync(shared)
    assert result.error is None
    assert result.report.mirrored == 10
    assert result.report.quarantined == 6
    async with open_store(shared.backend.url) as store:
        reasons = {q["key"].split(":", 1)[1]: q["reason"] for q in await store.quarantined()}
    assert "start_time is not an ISO 8601 time" in reasons["bad-start"]
    assert reasons["bad-order"] == "end_time is before start_time"
    assert "total_tokens must be a finite number" in reasons["bad-tokens"]
    assert reasons["bad-type"] == "unknown run_type 'spaceship'"
    assert "total_cost is not a number" in reasons["bad-cost"]
    assert any(r == "id is empty" for r in reasons.values())
    patterns = await shared.get_error_patterns(error_type="MalformedRun")
    assert sum(p["count"] for p in patterns) == 6
    assert (await series(shared))[LATENCY]["count"] == 10


async def test_failed_runs_become_patterns_and_insights_link_to_langsmith(
        shared: SharedState, fake: FakeLangSmith) -> None:
    errored = [fake.run("proj-a", name="checkout", start=ago(400) + i, latency_s=0.1,
                        error=f"ValueError('order {1000 + i} not found')\n\nTraceback ...")
               for i in range(4)]
    add_runs(fake, 6, first=ago(300), name="checkout")
    await configure(shared, **api_options(fake, child_run_types=[]))
    await sync(shared)
    patterns = await shared.get_error_patterns(error_type="ValueError")
    assert len(patterns) == 1
    assert patterns[0]["count"] == 4
    assert patterns[0]["source_agents"] == ["checkout"]
    assert patterns[0]["normalized_message"] == "order <num> not found"
    found = await series(shared)
    assert found["langsmith_bridge/proj-a/checkout/error"]["mean"] == pytest.approx(0.4)
    [new] = await shared.get_insights(insight_type="new_failure_mode")
    examples = new["content"]["examples"]
    assert {e["run_id"] for e in examples} <= {r["id"] for r in errored}
    assert len(examples) == 3
    assert all(e["url"].startswith("http://localhost/o/") and e["run_id"] in e["url"]
               for e in examples)


async def test_child_runs_give_per_node_latency_tokens_and_the_slowest_node(
        shared: SharedState, fake: FakeLangSmith) -> None:
    for i in range(4):
        root = fake.run("proj-a", name="agent", start=ago(500) + i * 10, latency_s=3.0)
        fake.run("proj-a", name="retrieve", run_type="retriever", parent=root["id"],
                 trace=root["id"], start=ago(500) + i * 10 + 0.1, latency_s=0.2)
        fake.run("proj-a", name="ChatModel", run_type="llm", parent=root["id"],
                 trace=root["id"], start=ago(500) + i * 10 + 0.4, latency_s=2.5,
                 prompt_tokens=100, completion_tokens=20, total_tokens=120,
                 total_cost="0.0015", first_token_time=None)
    await configure(shared, **api_options(fake, child_run_types=["llm", "retriever"]))
    result = await sync(shared)
    assert result.report.mirrored == 12
    found = await series(shared)
    assert found["langsmith_bridge/proj-a/llm:ChatModel/latency_ms"]["mean"] == \
        pytest.approx(2500.0)
    assert found["langsmith_bridge/proj-a/retriever:retrieve/latency_ms"]["count"] == 4
    assert found["langsmith_bridge/proj-a/llm:ChatModel/total_tokens"]["mean"] == 120
    assert found["langsmith_bridge/proj-a/llm:ChatModel/cost_usd"]["mean"] == \
        pytest.approx(0.0015)
    assert found[LATENCY]["count"] == 4
    [slowest] = await shared.get_insights(insight_type="slowest_node")
    assert slowest["content"]["node"] == "llm:ChatModel"
    assert slowest["content"]["runner_up"][0]["node"] == "retriever:retrieve"


async def test_v2_query_path_when_the_instance_serves_smithdb(
        shared: SharedState, monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = FakeLangSmith(instance_flags={"ch_query_enabled": False,
                                       "sdb_query_enabled": True}).start()
    allow_endpoints(monkeypatch, v2)
    try:
        v2.add_project("proj-a")
        for i in range(130):
            v2.run("proj-a", name="agent", start=ago(1000) + i, latency_s=0.5)
        running = v2.run("proj-a", name="agent", start=ago(200), latency_s=None)
        await configure(shared, **api_options(v2, child_run_types=[]))
        first = await sync(shared)
        assert first.error is None and first.source["api"] == "v2"
        assert (first.report.mirrored, first.report.in_progress) == (130, 1)
        assert not v2.requests("POST", "/runs/query")
        queries = v2.requests("POST", "/api/v2/runs/query")
        assert any(q.body.get("cursor") for q in queries)  # followed next_cursor
        v2.put("proj-a", {**running, "status": "success",
                          "end_time": iso(parse_time(running["start_time"]) + 7.0)})
        second = await sync(shared)
        assert second.report.mirrored == 1
        found = await series(shared)
        assert found[LATENCY]["count"] == 131
        assert found[LATENCY]["max"] == pytest.approx(7000.0)
    finally:
        v2.stop()


async def test_unknown_project_is_reported_and_others_still_mirror(
        shared: SharedState, fake: FakeLangSmith, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGA_LANGSMITH_PROJECTS", "ghost,proj-a")
    add_runs(fake, 3, first=ago(100))
    await configure(shared, **api_options(fake, child_run_types=[]))
    result = await sync(shared)
    assert result.report.mirrored == 3
    [pattern] = await shared.get_error_patterns(error_type="LangSmithProjectNotFound")
    assert "ghost" in pattern["sample_message"]


async def test_api_key_never_reaches_state_exports_or_logs(
        shared: SharedState, fake: FakeLangSmith, langsmith_env: str,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    add_runs(fake, 5, first=ago(100))
    fake.fail("POST", "/runs/query", status=500)
    await configure(shared, **api_options(fake, child_run_types=[]))
    await sync(shared)
    wrong = FakeLangSmith().start()  # a server that rejects the key: the error is reported
    allow_endpoints(monkeypatch, wrong)
    try:
        wrong.add_project("proj-a")
        await configure(shared, **api_options(wrong, child_run_types=[]))
        wrong.fail("GET", "/sessions", status=401)
        failed = await sync(shared)
        assert failed.error and "401" in failed.error
    finally:
        wrong.stop()
    exported = json.dumps(await shared.export_state())
    state = json.dumps(await shared.read(), default=str)
    async with open_store(shared.backend.url) as store:
        quarantined = json.dumps(await store.quarantined())
    secret = langsmith_env
    for text in (exported, state, quarantined, caplog.text):
        assert secret not in text
        assert secret[:20] not in text
    assert fake.seen and all(s.headers.get("x-api-key") == secret for s in fake.seen)


@pytest.mark.parametrize(("path", "body", "problem"), [
    ("/runs/query", {"session": [], "select": ["id", "spaceship"]}, "select"),
    ("/runs/query", {"session": [], "run_type": "LLM"}, "run_type"),
    ("/runs/query", {"session": [], "order": "sideways"}, "order"),
    ("/runs/query", {"session": [], "sessions": []}, "unknown field"),
    ("/api/v2/runs/query", {"project_ids": [], "selects": ["id"]}, "selects"),
    ("/api/v2/runs/query", {"project_ids": [], "run_type": "llm"}, "run_type"),
    ("/api/v2/runs/query", {"project_ids": [], "order": "asc"}, "unknown field"),
])
def test_the_fake_refuses_invalid_request_fields_like_the_service(
        fake: FakeLangSmith, path: str, body: dict[str, Any], problem: str) -> None:
    import requests

    from tests.bridge.fake_langsmith import API_KEY

    reply = requests.post(fake.url + path, json=body, headers={"x-api-key": API_KEY}, timeout=5)
    assert reply.status_code == 422
    assert problem in reply.json()["detail"]


async def test_a_refused_request_is_one_clear_error_and_changes_nothing(
        shared: SharedState, fake: FakeLangSmith) -> None:
    add_runs(fake, 5, first=ago(100))
    await configure(shared, **api_options(fake, child_run_types=["llm"]))
    fake.fail("POST", "/runs/query", status=422, skip=1)  # the child-run query is refused
    result = await sync(shared)
    assert result.error == "POST /runs/query: HTTP 422"
    assert [s.status for s in fake.requests("POST", "/runs/query")] == [200, 422]  # no retry
    assert result.report.mirrored == 5  # the root runs' chunk landed before it
    again = await sync(shared)
    assert again.error is None
    assert (await series(shared))[LATENCY]["count"] == 5


async def test_a_cursor_from_before_the_overlap_resumes_without_counting_twice(
        shared: SharedState, fake: FakeLangSmith) -> None:
    from state import events

    add_runs(fake, 40, first=ago(300))
    await configure(shared, **api_options(fake, child_run_types=[]))
    assert (await sync(shared)).report.mirrored == 40
    data = await agent_data(shared)
    key = f"langsmith:{fake.url}"
    st = data["cursors"][key]["s"]["proj-a#root"]
    old = {"lo": st["lo"], "b": [], "o": {}}  # the start-time cursor's shape: lo, b, o
    data["cursors"][key]["s"] = {"proj-a#root": old}
    await shared.write_events([events.agent_data(AGENT, data)])
    later = add_runs(fake, 5, first=time.time() + 1e-3, spacing=1e-4, latency=0.01)
    await asyncio.sleep(0.05)
    again = await sync(shared)
    assert again.report.mirrored == len(later)  # no overlap behind an old cursor: no recount
    assert (await series(shared))[LATENCY]["count"] == 45
