"""The ProfileImportAgent inside system ticks (``graph.runner.tick``), on every backend:
inbox pick-up, budgeted slices that resume, metrics, grouped errors, insights, no crashes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from graph.runner import tick
from nodes.profile_import.store import default_inbox
from state import SharedState
from tests.importer.helpers import (
    SAMPLE_FILES,
    SAMPLES,
    people_rows,
    run_import,
    store_of,
    write_csv,
)

TINY = 0.001  # an interval that makes the agent due on every tick
AGENT = "profile_import"


@pytest.fixture
def inbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    monkeypatch.setenv("BGA_IMPORT_ROOTS", str(folder))  # the operator's root (state.policy)
    return folder


@pytest.fixture
async def shared(db_url: str, inbox: Path):
    async with SharedState.open(db_url, producer="tests") as s:
        await s.update_config({"agents": {AGENT: {"interval_s": TINY, "options": {
            "inbox": str(inbox), "settle_s": 0}}}})
        yield s


async def agent(shared: SharedState) -> dict[str, Any]:
    return {a["agent_id"]: a for a in await shared.get_agents()}[AGENT]


async def data(shared: SharedState) -> dict[str, Any]:
    return ((await shared.read()).get("agent_data", {}).get(AGENT) or {}).get("value") or {}


async def series(shared: SharedState) -> dict[str, dict[str, Any]]:
    return (await shared.get_performance_summary(hours=1))["series"]


async def test_samples_dropped_in_the_inbox_are_imported_in_one_tick(
        shared: SharedState, inbox: Path, db_url: str) -> None:
    for name in SAMPLE_FILES:
        shutil.copy(SAMPLES / name, inbox / name)
    await tick(shared)

    me = await agent(shared)
    assert me["kind"] == AGENT and me["reported_status"] == "ok"
    assert me["heartbeat"]["rows"] == 400 and me["heartbeat"]["job_status"] == "done"
    assert (await data(shared))["jobs_done"] == 3
    assert (await data(shared))["last_job"]["name"] == "03_crm_export.json"
    with store_of(db_url) as store:
        assert store.count_profiles() == 340  # the same result as `bga import`, file by file

    found = await series(shared)
    assert found[f"{AGENT}/rows_per_s"]["count"] == 1
    assert found[f"{AGENT}/batch_latency_ms"]["count"] == 3  # one batch per file
    assert found[f"{AGENT}/rejection_rate"]["mean"] == pytest.approx(100 * 22 / 400)
    assert found[f"{AGENT}/duplicate_rate"]["mean"] == pytest.approx(100 * 38 / 378)

    summaries = {i["content"]["file"]: i["content"]["summary"]
                 for i in await shared.get_insights(insight_type="import_rejections")}
    assert summaries == {
        "01_contacts.csv": "01_contacts.csv: 6 % of rows rejected, mostly invalid e-mail",
        "02_leads.jsonl": "02_leads.jsonl: 5 % of rows rejected, mostly invalid e-mail",
        "03_crm_export.json": "03_crm_export.json: 5 % of rows rejected, mostly invalid phone "
                              "number"}
    done = await shared.get_insights(insight_type="import_completed")
    assert len(done) == 3 and all(i["priority"] == "info" for i in done)

    patterns = {p["normalized_message"]: p for p in await shared.get_error_patterns()
                if p["error_type"] == "RowRejected"}
    assert patterns["rows rejected: invalid e-mail"]["count"] == 2  # contacts + leads, grouped
    assert "rows rejected: invalid JSON" in patterns

    await tick(shared)  # nothing new in the inbox: nothing imported again
    assert (await data(shared))["jobs_done"] == 3
    assert (await agent(shared))["heartbeat"]["rows"] == 0
    with store_of(db_url) as store:
        assert len(store.jobs()) == 3


async def test_a_big_file_is_imported_in_budgeted_slices_across_ticks(
        shared: SharedState, inbox: Path, db_url: str, tmp_path: Path) -> None:
    rows = people_rows(1_000)
    write_csv(inbox / "big.csv", rows)
    await shared.update_config({"agents": {AGENT: {"batch_size": 250, "options": {
        "inbox": str(inbox), "settle_s": 0, "work_fraction": 0.0001}}}})  # one batch a tick
    progress = []
    for _ in range(6):
        await tick(shared)
        beat = (await agent(shared))["heartbeat"]
        progress.append((beat["job_status"], beat["job_rows"]))
        if beat["job_status"] == "done":
            break
    assert progress == [("running", 250), ("running", 500), ("running", 750), ("done", 1_000)]
    assert (await series(shared))[f"{AGENT}/rows_per_s"]["count"] == 4  # the optimizer's metric

    reference = await run_import(write_csv(tmp_path / "same.csv", rows),
                                 f"sqlite:///{tmp_path / 'ref.db'}")
    last = (await data(shared))["last_job"]
    for key in ("read", "inserted", "updated", "unchanged", "rejected"):
        assert last[key] == reference[key], key


async def test_bad_files_become_errors_and_insights_not_a_crash(
        shared: SharedState, inbox: Path, db_url: str) -> None:
    (inbox / "empty.csv").write_bytes(b"")
    (inbox / "latin1.csv").write_bytes("name,email\nJosé,jose@example.com\n".encode("latin-1"))
    await tick(shared)
    me = await agent(shared)
    assert me["reported_status"] == "ok"  # the agent reports failures, it does not fail
    assert (await data(shared))["jobs_done"] == 2
    failed = {i["content"]["file"]: i for i in await shared.get_insights(
        insight_type="import_failed")}
    assert set(failed) == {"empty.csv", "latin1.csv"}
    assert all(i["priority"] == "high" for i in failed.values())
    assert "not UTF-8" in failed["latin1.csv"]["content"]["error"]
    assert any(p["error_type"] == "ImportFailed" for p in await shared.get_error_patterns())

    await tick(shared)  # failed versions are not retried on every tick
    with store_of(db_url) as store:
        assert len(store.jobs()) == 2


async def test_batch_size_comes_from_the_config(shared: SharedState, inbox: Path,
                                                db_url: str) -> None:
    await shared.update_config({"agents": {AGENT: {"batch_size": 50}}})
    shutil.copy(SAMPLES / "01_contacts.csv", inbox / "contacts.csv")
    await tick(shared)
    with store_of(db_url) as store:
        [job] = store.jobs()
    assert job["status"] == "done" and job["batches"] == 4  # 200 rows / 50


async def test_test_email_domains_come_from_the_config(shared: SharedState, inbox: Path,
                                                      db_url: str) -> None:
    write_csv(inbox / "qa.csv", [["QA", "qa@staging.test"]], header=["full_name", "email"])
    await shared.update_config({"agents": {AGENT: {"options": {"test_email_domains": True}}}})
    await tick(shared)
    with store_of(db_url) as store:
        [job] = store.jobs()
        assert store.profile("email:qa@staging.test") is not None
    assert (job["status"], job["inserted"], job["rejected"]) == ("done", 1, 0)


async def test_files_still_being_written_wait_until_they_settle(
        shared: SharedState, inbox: Path, db_url: str) -> None:
    await shared.update_config({"agents": {AGENT: {"options": {
        "inbox": str(inbox), "settle_s": 3600}}}})
    path = shutil.copy(SAMPLES / "01_contacts.csv", inbox / "contacts.csv")
    await tick(shared)
    with store_of(db_url) as store:
        assert store.jobs() == []
    os.utime(path, (1_000_000_000, 1_000_000_000))  # untouched for long enough
    await tick(shared)
    with store_of(db_url) as store:
        assert [j["status"] for j in store.jobs()] == ["done"]


def test_default_inbox_is_imports_beside_the_state_database() -> None:
    assert default_inbox("sqlite:///./data/state.db") == Path("./data/imports")
    assert default_inbox("sqlite:////srv/bga/state.db") == Path("/srv/bga/imports")
    assert default_inbox("memory://x") is None
    assert default_inbox("postgresql://db/bga") is None  # no file to sit beside: set ``inbox``
