"""ExportFileSource: a JSON Lines export mirrored with exactly the expected aggregates."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from graph.cli import app
from nodes.langsmith_bridge.sync import sync
from state import SharedState
from tests.bridge.conftest import series
from tests.bridge.fake_langsmith import iso

pytestmark = pytest.mark.usefixtures("no_langsmith_env")

P = "langsmith_bridge/shop"


def run(name: str, start: float, latency_ms: int | None, **extra: Any) -> dict[str, Any]:
    rid = str(uuid.uuid4())
    return {"id": rid, "name": name, "run_type": extra.pop("run_type", "chain"),
            "start_time": iso(start),
            "end_time": iso(start + latency_ms / 1000) if latency_ms is not None else None,
            "status": "error" if extra.get("error") else "success", "trace_id": rid,
            "parent_run_id": None, "inputs": {"q": "x"}, "outputs": {"a": "y"},
            "extra": {"metadata": {"user": "u1"}}, "tags": ["t"], **extra}


def write(path: Path, lines: list[Any]) -> None:
    with path.open("a") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """8 checkout traces (100..800 ms, 2 failed), 4 LLM calls, 1 running, 3 bad lines."""
    t0 = float(int(time.time()) - 1200)  # whole seconds: exact microsecond times
    lines: list[Any] = []
    for i in range(1, 9):
        error = f"TimeoutError('upstream 503 after {30 + i} s')\n\nTraceback (most recent ...)" \
            if i in (3, 7) else None
        lines.append(run("checkout", t0 + 60 * i, 100 * i, prompt_tokens=10 * i,
                         completion_tokens=5 * i, total_tokens=15 * i, total_cost=0.001 * i,
                         first_token_time=iso(t0 + 60 * i + 0.05), error=error))
    parent = lines[0]["id"]
    for i, ms in enumerate((50, 60, 70, 80)):
        lines.append(run("ChatOpenAI", t0 + 600 + i, ms, run_type="llm", parent_run_id=parent,
                         trace_id=parent))
    running = run("checkout", t0 + 900, None)
    lines.append(running)
    lines.append("")
    lines.append("this is not json")
    lines.append([1, 2, 3])
    lines.append(run("checkout", t0 + 30, 100, end_time=iso(t0 + 20)))
    path = tmp_path / "shop.jsonl"
    write(path, lines)
    return path, {"running": running, "t0": t0}


async def test_export_file_gives_exact_aggregates(db_url: str, export: tuple[Path, dict]
                                                  ) -> None:
    path, _ = export
    async with SharedState.open(db_url, producer="tests") as shared:
        result = await sync(shared, path=path)
        assert result.error is None
        report = result.report
        assert (report.read, report.mirrored, report.quarantined, report.in_progress) == \
            (16, 12, 3, 1)
        assert report.errored == 2
        reasons = sorted(q["reason"] for q in result.quarantine)
        assert reasons[0].startswith("line 15: invalid JSON")
        assert reasons[1] == "line 16: record must be a JSON object, got list"
        assert reasons[2] == "line 17: end_time is before start_time"

        found = await series(shared)
        lat = found[f"{P}/checkout/latency_ms"]
        assert (lat["count"], lat["mean"], lat["min"], lat["max"]) == (8, 450.0, 100.0, 800.0)
        assert lat["unit"] == "ms"
        assert found[f"{P}/checkout/error"]["mean"] == 0.25
        assert found[f"{P}/checkout/prompt_tokens"]["mean"] == 45.0
        assert found[f"{P}/checkout/completion_tokens"]["mean"] == 22.5
        assert found[f"{P}/checkout/total_tokens"]["mean"] == 67.5
        cost = found[f"{P}/checkout/cost_usd"]
        assert cost["count"] * cost["mean"] == pytest.approx(0.036, rel=1e-12)
        assert found[f"{P}/checkout/first_token_ms"]["mean"] == pytest.approx(50.0, rel=1e-9)
        llm = found[f"{P}/llm:ChatOpenAI/latency_ms"]
        assert (llm["count"], llm["mean"], llm["min"], llm["max"]) == (4, 65.0, 50.0, 80.0)
        assert f"{P}/llm:ChatOpenAI/total_tokens" not in found  # none reported

        [pattern] = await shared.get_error_patterns(error_type="TimeoutError")
        assert pattern["count"] == 2
        assert pattern["source_agents"] == ["checkout"]
        assert pattern["normalized_message"] == "upstream <num> after <duration>"

        # the same file again: everything is recognised as already seen
        again = await sync(shared, path=path)
        assert (again.report.read, again.report.mirrored, again.report.skipped) == (0, 0, 16)
        assert (await series(shared))[f"{P}/checkout/latency_ms"]["count"] == 8


async def test_appended_lines_and_a_run_that_ends_later_are_mirrored_once(
        db_url: str, export: tuple[Path, dict]) -> None:
    path, info = export
    async with SharedState.open(db_url, producer="tests") as shared:
        await sync(shared, path=path)
        done = {**info["running"], "end_time": iso(info["t0"] + 900 + 2.5),
                "status": "success"}
        write(path, [done, run("checkout", info["t0"] + 950, 900)])
        second = await sync(shared, path=path)
        assert (second.report.read, second.report.mirrored, second.report.skipped) == (2, 2, 16)
        lat = (await series(shared))[f"{P}/checkout/latency_ms"]
        assert (lat["count"], lat["max"]) == (10, 2500.0)


async def test_file_read_in_several_steps_counts_each_run_once(
        db_url: str, tmp_path: Path) -> None:
    t0 = float(int(time.time()) - 600)
    path = tmp_path / "many.jsonl"
    write(path, [run("step", t0 + i * 0.01, 10 + i % 7) for i in range(1000)])
    async with SharedState.open(db_url, producer="tests") as shared:
        result = await sync(shared, path=path, project="many", max_runs_per_step=300)
        assert result.steps == 4
        assert (result.report.read, result.report.mirrored) == (1000, 1000)
        lat = (await series(shared))["langsmith_bridge/many/step/latency_ms"]
        assert lat["count"] == 1000
        assert lat["mean"] == pytest.approx(sum(10 + i % 7 for i in range(1000)) / 1000)


def test_cli_bridge_sync_prints_counts_and_series(tmp_path: Path,
                                                  export: tuple[Path, dict]) -> None:
    path, _ = export
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    out = runner.invoke(app, ["bridge", "sync", "--file", str(path), "--json", "--db", url])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert (doc["read"], doc["mirrored"], doc["skipped"], doc["quarantined"]) == (16, 12, 0, 3)
    assert doc["series"][f"{P}/checkout/latency_ms"]["count"] == 8
    assert doc["source"]["kind"] == "file"
    again = json.loads(runner.invoke(app, ["bridge", "sync", "--file", str(path), "--json",
                                           "--db", url]).stdout)
    assert (again["mirrored"], again["skipped"]) == (0, 16)
    text = runner.invoke(app, ["bridge", "sync", "--file", str(path), "--db", url])
    assert text.exit_code == 0
    assert "skipped" in text.stdout and "checkout" in text.stdout
    missing = runner.invoke(app, ["bridge", "sync", "--file", str(tmp_path / "nope.jsonl"),
                                  "--db", url])
    assert missing.exit_code == 2
