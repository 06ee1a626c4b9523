"""One liveness verdict everywhere, one insight per event, no noise from the system itself.

Time is driven by explicit ``now`` values (and states whose timestamps are moved back), never
by sleeping.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from graph import runner
from nodes import coordinator
from nodes.base import Emitter
from nodes.langsmith_bridge.records import iso
from nodes.langsmith_bridge.sync import sync
from state import SharedState, queries
from state.config import SystemConfig
from tests.integration.test_cli import child_env, run_bga

INTERVAL = 30.0


async def _ticked_state(shared: SharedState) -> tuple[dict[str, Any], float]:
    """A state after one real tick, with an outside agent reporting every 30 s."""
    await shared.register_agent("outside", kind="service", interval_s=INTERVAL)
    await shared.update_agent_heartbeat("outside", {"status": "running"})
    await runner.tick(shared, wait=30)
    state = await shared.read()
    return state, state["stats"]["last_tick_at"]


async def test_one_liveness_verdict_for_coordinator_api_and_dashboard(db_url: str) -> None:
    async with SharedState.open(db_url, producer="t") as shared:
        state, ticked = await _ticked_state(shared)
    config = queries.config_of(state)
    hb = state["agents"]["outside"]["hb"]["at"]
    down_after = max(config.liveness.scheduler_down_factor * config.ticker.interval_s,
                     config.liveness.scheduler_down_min_s)
    cases = [  # (now, outside's verdict, scheduler's verdict)
        (hb + 1, "active", "running"),
        (hb + config.liveness.stale_factor * INTERVAL + 1, "stale", "down"),
        (hb + config.liveness.dead_factor * INTERVAL + 1, "dead", "down"),
    ]
    assert ticked + down_after < cases[1][0]  # the scheduler is down by the second case
    for now, verdict, sched in cases:
        live = queries.liveness(state, now)
        assert live["agents"]["outside"]["verdict"] == verdict
        assert live["agents"]["outside"]["age_s"] == pytest.approx(now - hb)
        assert live["scheduler"]["verdict"] == sched
        # the API's agent list, the status summary and the coordinator say the same
        listed = {a["agent_id"]: a for a in queries.agent_list(state, now)}
        assert listed["outside"]["liveness"] == verdict
        assert listed["outside"]["reported_status"] == "running"
        assert listed["outside"]["status"] == ("running" if verdict == "active" else verdict)
        summary = queries.system_state(state, now)
        assert summary["scheduler"]["verdict"] == sched
        assert summary["agents"][verdict] >= 1
        assert sum(summary["agents"][v] for v in queries.VERDICTS) == len(state["agents"])
        _, _, judged = coordinator._liveness(state, config, now, Emitter(now))
        assert judged == {a: v["verdict"] for a, v in live["agents"].items()}
    # the scheduler is down only once several intervals have passed
    assert queries.liveness(state, ticked + down_after - 1)["scheduler"]["verdict"] == "running"
    assert queries.liveness(state, ticked + down_after + 1)["scheduler"]["verdict"] == "down"
    assert queries.liveness({}, ticked)["scheduler"]["verdict"] == "never"


def _moved_back(doc: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The exported state as it would be ``seconds`` later with nothing running."""
    ch = doc["channels"]
    ch["stats"]["last_tick_at"] -= seconds
    for key in ("started_at", "previous_started_at"):
        if ch["tick"].get(key) is not None:
            ch["tick"][key] -= seconds
    for rec in ch["agents"].values():
        for part in ("hb", "reg"):
            if rec.get(part):
                rec[part]["at"] -= seconds
    return doc


@pytest.mark.slow
async def test_bga_status_after_the_scheduler_stopped(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    stopped = f"sqlite:///{tmp_path / 'stopped.db'}"
    async with SharedState.open(url, producer="t") as shared:
        await _ticked_state(shared)
        await shared.add_performance_metric({"source_agent": "langsmith_bridge",
                                             "name": "local/chain:route/latency_ms",
                                             "value": 5.0, "unit": "ms"})
        await shared.add_performance_metric({"source_agent": "outside", "name": "latency_ms",
                                             "value": 12.0, "unit": "ms"})
        await shared.flush()
        doc = await shared.export_state()
    async with SharedState.open(stopped, producer="t") as shared:
        await shared.restore_state(_moved_back(doc, 98))  # ~90 s after the last tick

    env = child_env(COLUMNS="80")
    data = json.loads(run_bga("status", "--json", "--db", stopped, cwd=tmp_path, env=env).stdout)
    assert data["system"]["scheduler"]["verdict"] == "down"
    agents = {a["agent_id"]: a for a in data["agents"]}
    assert all(a["liveness"] in queries.VERDICTS for a in agents.values()), agents
    assert agents["outside"]["liveness"] == "stale"  # 98 s > 2 x 30 s
    assert data["system"]["agents"]["active"] == sum(
        a["liveness"] == "active" for a in agents.values())
    for a in agents.values():  # never "running" next to "stale" or "dead"
        if a["liveness"] in ("stale", "dead"):
            assert a["status"] == a["liveness"]

    text = run_bga("status", "--db", stopped, cwd=tmp_path, env=env).stdout
    assert "scheduler: DOWN" in text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "outside" in text and "latency_ms" in text
    assert "chain:route" not in text and "1 internal series hidden" in text
    assert "insights: 0 open of 0\n" in text
    everything = run_bga("status", "--all", "--db", stopped, cwd=tmp_path, env=env).stdout
    assert "chain:route" in everything


def _run(name: str, start: float, latency_ms: int) -> dict[str, Any]:
    rid = str(uuid.uuid4())
    return {"id": rid, "name": name, "run_type": "chain", "start_time": iso(int(start * 1e6)),
            "end_time": iso(int(start * 1e6) + latency_ms * 1000), "trace_id": rid,
            "status": "success"}


async def test_one_latency_regression_on_a_bridge_series_is_one_insight(
    db_url: str, tmp_path: Path
) -> None:
    now = float(int(time.time()))
    runs = [_run("search", now - 2400 + i * 20, 100) for i in range(30)]  # baseline
    runs += [_run("search", now - 300 + i * 5, 400) for i in range(30)]  # 4x slower now
    path = tmp_path / "runs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in runs))
    async with SharedState.open(db_url, producer="t") as shared:
        await sync(shared, path=path, project="app")
        await runner.tick(shared, wait=30)  # the coordinator reviews the same series
        await runner.tick(shared, wait=30)
        found = await shared.get_insights(insight_type="latency_regression")
    assert [(i["source_agent"], i["content"]["series"]) for i in found] == [
        ("langsmith_bridge", "langsmith_bridge/app/search/latency_ms")]
    assert found[0]["content"]["ratio"] == pytest.approx(4.0, rel=0.05)
    assert found[0]["content"]["examples"]  # the bridge's own evidence


async def test_a_healthy_system_reads_healthy_and_lists_its_deductions(db_url: str) -> None:
    async with SharedState.open(db_url, producer="t") as shared:
        await shared.register_agent("outside", kind="service", interval_s=INTERVAL)
        await shared.update_agent_heartbeat("outside", {"status": "running"})
        await shared.add_insight("import_completed", {"summary": "a.csv: 3 rows"},
                                 "profile_import", priority="info")
        await runner.tick(shared, wait=30)
        health = (await shared.get_system_state())["values"]["health"]
        assert (health["score"], health["status"], health["deductions"]) == (100.0, "healthy", [])
        counts = (await shared.get_system_state())["insights"]
        assert counts["open"] == 0 and counts["informational"] == 1
        assert "info" not in counts["open_by_priority"]
        await shared.add_insight("error_rate_spike", {"summary": "api: 40 errors"}, "x",
                                 priority="high")
        await runner.tick(shared, wait=30)
        health = (await shared.get_system_state())["values"]["health"]
    [deduction] = health["deductions"]
    assert deduction["points"] == coordinator.HEALTH_WEIGHTS["high"]
    assert "api: 40 errors" in deduction["reason"]
    assert health["score"] == 100.0 - deduction["points"]


def test_thresholds_live_only_in_rules_config() -> None:
    from nodes.langsmith_bridge.agent import BridgeSettings

    rules = set(SystemConfig().rules.model_dump())
    assert not rules & set(BridgeSettings.model_fields), rules & set(BridgeSettings.model_fields)
