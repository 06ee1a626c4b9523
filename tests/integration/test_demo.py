"""``make run`` (``bga run --demo``) and ``bga demo`` write the sample hour once per database:
re-running them continues the live traffic only, nothing is counted twice."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from graph.cli import app
from graph.demo import SEEDED, seed_sample_data
from state import SharedState


async def _counts(url: str) -> dict[str, int]:
    async with SharedState.open(url, producer="tests", read_only=True) as shared:
        perf = await shared.get_performance_summary(hours=24 * 7)
        patterns = await shared.get_error_patterns(time_window_hours=24 * 7)
        state = await shared.read()
        return {
            "billing_latency": perf["series"]["billing_worker/run_latency_ms"]["count"],
            "timeouts": sum(p["count"] for p in patterns if p["error_type"] == "TimeoutError"),
            "demo_optimizations": sum(1 for r in await shared.get_recent_optimizations(hours=48)
                                      if r["target"] == "checkout_api"),
            "insights": len(await shared.get_insights()),  # the demo writes none itself
            "seeded": int(SEEDED in (state.get("system") or {})),
        }


async def test_seed_writes_the_sample_hour_once_per_database(db_url: str) -> None:
    async with SharedState.open(db_url, producer="demo") as shared:
        first = await seed_sample_data(shared)
        assert first > 1000
        assert await seed_sample_data(shared) == 0  # already there, even before a fold
        await shared.flush()
        assert await seed_sample_data(shared) == 0
    assert await _counts(db_url) == {"billing_latency": 60, "timeouts": 3,
                                     "demo_optimizations": 1, "insights": 0,
                                     "seeded": 1}


def test_bga_run_demo_twice_counts_the_sample_hour_once(tmp_path: Path) -> None:
    import asyncio

    url = f"sqlite:///{tmp_path / 'state.db'}"
    runner = CliRunner()
    outputs = []
    for _ in range(2):
        result = runner.invoke(app, ["run", "--demo", "--ticks", "1", "--interval", "0.2",
                                     "--db", url])
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert "already in this database" not in outputs[0]
    assert "already in this database" in outputs[1]
    counts = asyncio.run(_counts(url))
    assert counts["billing_latency"] == 60 and counts["timeouts"] == 3
    assert counts["demo_optimizations"] == 1


async def test_demo_insights_come_from_the_rules(db_url: str) -> None:
    """The demo writes no insight itself; on the first tick the rules find its simulated
    faults and nothing else is high or critical: the slower checkout_api batches (a latency
    regression) and its burst of rejected e-mails (an error-rate spike)."""
    from graph import runner

    async with SharedState.open(db_url, producer="demo") as shared:
        await seed_sample_data(shared)
        assert await shared.get_insights() == []
        await runner.tick(shared, wait=60)
        urgent = {(i["insight_type"], i["content"].get("series") or i["content"].get("agent"),
                   i["source_agent"])
                  for i in await shared.get_insights(status=["open", "regressed"])
                  if i["priority"] in ("high", "critical")}
    assert urgent == {("latency_regression", "checkout_api/batch_latency_ms", "coordinator"),
                      ("error_rate_spike", "checkout_api", "coordinator")}
