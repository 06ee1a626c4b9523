"""Configuration is data, never capability (``state.policy``): each attack of issue 15 that
goes through the shared configuration, refused with an error naming the rule.

The shared config is writable by anyone with dashboard or database access; what it may name
(code, files, endpoints) is set by the operator in the environment of the acting process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from graph import runner
from nodes.langsmith_bridge.agent import BridgeSettings, make_source
from nodes.registry import AgentLoadError, resolve
from state import SharedState, policy
from state.config import AgentSection
from tests.agents.example import ECHO
from tests.bridge.fake_langsmith import API_KEY, FakeLangSmith


async def tick(shared: SharedState) -> None:
    await runner.tick(shared, wait=30)


def misconfigured(insights: list[dict], agent: str) -> str:
    found = [i for i in insights if i["insight_type"] == "agent_misconfigured"
             and i["content"].get("agent") == agent]
    assert found, f"no agent_misconfigured insight for {agent}"
    return found[0]["content"]["reason"]


# -- code ------------------------------------------------------------------------------------


async def test_a_class_from_shared_config_is_never_imported(
        sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``class: "this:X"`` printed the Zen of Python inside a tick."""
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        await shared.update_config({"agents": {"zen": {"class": "this:X", "interval_s": 1}}})
        await tick(shared)
        reason = misconfigured(await shared.get_insights(), "zen")
        assert "refused by rule 'code-from-environment'" in reason
        assert "BGA_AGENT_CLASSES" in reason
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


def test_an_allow_listed_class_loads_and_others_in_its_package_do_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGA_AGENT_CLASSES", ECHO)
    assert resolve("echo", AgentSection(class_path=ECHO)).cls.__name__ == "EchoAgent"
    with pytest.raises(AgentLoadError, match="rule 'code-from-environment'"):
        resolve("slow", AgentSection(class_path="tests.agents.example:SlowAgent"))
    monkeypatch.setenv("BGA_AGENT_CLASSES", "")
    with pytest.raises(AgentLoadError, match="rule 'code-from-environment'"):
        resolve("echo", AgentSection(class_path=ECHO))
    # a built-in kind named by its entry point's own path is fine
    assert resolve("x", AgentSection(class_path="nodes.system_monitor:SystemMonitor")).kind \
        == "system_monitor"


async def test_the_importer_runner_is_never_taken_from_shared_config(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("BGA_IMPORT_ROOTS", str(inbox))
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        await shared.update_config({"agents": {"profile_import": {
            "interval_s": 0.001, "options": {"inbox": str(inbox), "runner": "this:s"}}}})
        await tick(shared)
        hb = {a["agent_id"]: a for a in await shared.get_agents()}["profile_import"]
        assert hb["reported_status"] == "error"  # what it said (its verdict may be stale)
        error = hb["heartbeat"]["last_error"]
        assert "options.runner" in error and "rule 'code-from-environment'" in error
        assert "BGA_IMPORT_RUNNERS" in error
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


# -- files -----------------------------------------------------------------------------------


async def test_the_bridge_reads_no_file_outside_the_export_roots(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``options.path=/etc/passwd`` copied 31 lines into bga_trace_quarantine."""
    root = tmp_path / "exports"
    root.mkdir()
    monkeypatch.setenv("BGA_EXPORT_ROOTS", str(root))
    (root / "evil.jsonl").symlink_to("/etc/passwd")  # inside the root, but resolves outside
    for path in ("/etc/passwd", str(root / "evil.jsonl"), str(root / ".." / ".." / "etc")):
        with pytest.raises(policy.PolicyRefused, match="rule 'read-roots'") as info:
            make_source(BridgeSettings(path=path), sqlite_url)
        assert "options.path" in str(info.value) and "BGA_EXPORT_ROOTS" in str(info.value)
    inside = root / "runs.jsonl"
    inside.write_text("")
    assert make_source(BridgeSettings(path=str(inside)), sqlite_url).describe()["path"] \
        == str(inside.resolve())
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        await shared.update_config({"agents": {"langsmith_bridge": {
            "interval_s": 0.001, "options": {"path": "/etc/passwd"}}}})
        await tick(shared)
        hb = {a["agent_id"]: a for a in await shared.get_agents()}["langsmith_bridge"]
        assert "rule 'read-roots'" in hb["heartbeat"]["last_error"]
    import sqlite3

    db = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        tables = {r[0] for r in db.execute("select name from sqlite_master")}
        rows = db.execute("select count(*) from bga_trace_quarantine").fetchone()[0] \
            if "bga_trace_quarantine" in tables else 0
    finally:
        db.close()
    assert rows == 0
    assert b"root:x:0:0" not in Path(sqlite_url.removeprefix("sqlite:///")).read_bytes()


async def test_the_importer_inbox_is_confined_to_the_import_roots(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``profile_import.options.inbox`` pointed at any folder (payroll.csv was imported)."""
    root = tmp_path / "inbox"
    root.mkdir()
    elsewhere = tmp_path / "hr"
    elsewhere.mkdir()
    (elsewhere / "payroll.csv").write_text("email,ssn\nceo@example.com,078-05-1120\n")
    os.utime(elsewhere / "payroll.csv", (1, 1))
    (root / "link").symlink_to(elsewhere)
    monkeypatch.setenv("BGA_IMPORT_ROOTS", str(root))
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        for inbox in (str(elsewhere), str(root / "link")):
            await shared.update_config({"agents": {"profile_import": {
                "interval_s": 0.001, "options": {"inbox": inbox, "settle_s": 0}}}})
            await tick(shared)
            hb = {a["agent_id"]: a for a in await shared.get_agents()}["profile_import"]
            assert hb["reported_status"] == "error"
            assert "options.inbox" in hb["heartbeat"]["last_error"]
            assert "rule 'read-roots'" in hb["heartbeat"]["last_error"]
    assert b"078-05-1120" not in b"".join(
        p.read_bytes() for p in tmp_path.rglob("*.db") if p.is_file())


# -- endpoints -------------------------------------------------------------------------------


@pytest.fixture
def two_servers() -> Iterator[tuple[FakeLangSmith, FakeLangSmith]]:
    good, evil = FakeLangSmith().start(), FakeLangSmith().start()
    good.add_project("proj-a")
    evil.add_project("proj-a")
    try:
        yield good, evil
    finally:
        good.stop()
        evil.stop()


async def test_the_api_key_goes_only_to_the_endpoint_set_beside_it(
        sqlite_url: str, two_servers: tuple[FakeLangSmith, FakeLangSmith],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``options.api_url`` pointed elsewhere made the next tick send ``x-api-key`` there."""
    good, evil = two_servers
    monkeypatch.setenv("LANGSMITH_API_KEY", API_KEY)
    monkeypatch.setenv("BGA_LANGSMITH_PROJECTS", "proj-a")
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", good.url)
    monkeypatch.delenv("BGA_LANGSMITH_ENDPOINTS", raising=False)
    with pytest.raises(policy.PolicyRefused, match="rule 'credential-endpoint'"):
        make_source(BridgeSettings(api_url=evil.url), sqlite_url)
    async with SharedState.open(sqlite_url, producer="tests") as shared:
        await shared.update_config({"agents": {"langsmith_bridge": {
            "interval_s": 0.001, "options": {"api_url": evil.url, "settle_s": 0}}}})
        await tick(shared)
        hb = {a["agent_id"]: a for a in await shared.get_agents()}["langsmith_bridge"]
        assert "rule 'credential-endpoint'" in hb["heartbeat"]["last_error"]
        assert "options.api_url" in hb["heartbeat"]["last_error"]
    assert evil.seen == []  # not one request, so the key never left
    # the config may choose among endpoints the operator listed
    monkeypatch.setenv("BGA_LANGSMITH_ENDPOINTS", f"{evil.url}/")
    assert make_source(BridgeSettings(api_url=evil.url), sqlite_url).api_url.rstrip("/") \
        == evil.url.rstrip("/")
