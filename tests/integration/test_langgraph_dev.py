"""The project under ``langgraph dev`` (langgraph.json), offline, on a SQLite file of its own.

The server runs the uncompiled system graph with our checkpointer on ``BGA_DATABASE_URL``; the
tests write through ``SharedState`` to the same file and read back both through the SDK and
through ``SharedState``. The server runs in a temporary directory with a copy of
langgraph.json whose paths point into the project (the checkpointer path is resolved against
the working directory): the server keeps threads, runs and crons in ``./.langgraph_api``, so
the working tree's own ``.langgraph_api`` (crons a developer made with ``make dev``) can
neither fire into a test nor be changed by one. ``--no-reload`` keeps other people's edits
from restarting it mid-test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from graph import runner
from state import SharedState
from state.schema import thread_uuid
from tests.integration.test_cli import ROOT, child_env, sqlite_url_of

langgraph_sdk = pytest.importorskip("langgraph_sdk")

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 120.0
THREAD = thread_uuid("system")
USER_GRAPH = "user_log"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DevServer:
    url: str
    db_url: str
    log: Path
    proc: subprocess.Popen

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _get(url: str) -> dict | None:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and any helper
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    langgraph = Path(sys.executable).parent / "langgraph"
    if not langgraph.exists():
        pytest.skip("langgraph-cli is not installed in this environment")
    directory = tmp_path_factory.mktemp("langgraph-dev")
    db_url = sqlite_url_of(directory / "state.db")
    config = json.loads((ROOT / "langgraph.json").read_text())
    config["dependencies"] = [str(ROOT) if d == "." else d for d in config["dependencies"]]
    config["graphs"] = {name: str(ROOT / path) for name, path in config["graphs"].items()}
    config["graphs"][USER_GRAPH] = f"{ROOT / 'tests/conformance/dev_graph.py'}:graph"
    config["checkpointer"]["path"] = str(ROOT / config["checkpointer"]["path"])
    (directory / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    log = directory / "server.log"
    env = child_env(BGA_DATABASE_URL=db_url, LANGGRAPH_CLI_NO_ANALYTICS="1",
                    LANGGRAPH_NO_VERSION_CHECK="true", LANGSMITH_TRACING="false")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(langgraph), "dev", "--no-browser", "--no-reload", "--port", str(port)],
            cwd=directory, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    dev = DevServer(f"http://127.0.0.1:{port}", db_url, log, proc)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while _get(f"{dev.url}/ok") is None:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{dev.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev not up after {STARTUP_TIMEOUT_S} s:\n{dev.log_tail()}")
            time.sleep(0.25)
        yield dev
    finally:
        _stop(proc)


@pytest.fixture(autouse=True)
def _no_langsmith_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process tick below must not trace or reach LangSmith with a developer's key."""
    for name in list(os.environ):
        if name.startswith(("LANGSMITH_", "LANGCHAIN_")):
            monkeypatch.delenv(name)


@pytest.fixture
async def client(server: DevServer) -> AsyncIterator:
    sdk = langgraph_sdk.get_client(url=server.url, api_key=None)
    await sdk.threads.create(thread_id=THREAD, if_exists="do_nothing")
    # A fresh state directory (see the module docstring): no cron can tick behind our back.
    assert await sdk.crons.search(limit=100) == []
    yield sdk


async def _shared_view(db_url: str) -> tuple[dict, dict, int]:
    async with SharedState.open(db_url, producer="tests", read_only=True) as shared:
        summary = await shared.get_system_state()
        perf = await shared.get_performance_summary(hours=1)
        return summary, perf, await shared.backend.pending_count()


async def test_the_server_keeps_its_state_outside_the_working_tree(server: DevServer) -> None:
    assert (Path(server.log).parent / ".langgraph_api").is_dir()


async def test_info_reports_crons_enabled(server: DevServer) -> None:
    info = _get(f"{server.url}/info")
    assert info is not None, server.log_tail()
    assert info["flags"]["crons"] is True


async def test_a_server_run_is_one_tick_that_folds_api_writes_exactly_once(
    server: DevServer, client
) -> None:
    before, _, _ = await _shared_view(server.db_url)
    ticks0 = int(before["stats"].get("ticks", 0))
    folded0 = int(before["stats"].get("events_folded", 0))
    async with SharedState.open(server.db_url, producer="dev-test") as shared:
        await shared.add_performance_metrics(
            [{"source_agent": "devtest", "name": "latency_ms", "value": float(v)}
             for v in range(1, 8)])
        await shared.add_error_pattern("ValueError", "bad row 17", "devtest")
        await shared.update_agent_heartbeat("devtest", {"status": "running"})
    written = 7 + 1 + 1

    result = await client.runs.wait(THREAD, "system", input={})

    assert isinstance(result, dict), result
    assert result["stats"]["ticks"] == ticks0 + 1
    assert result["stats"]["events_folded"] == folded0 + written
    state = await client.threads.get_state(THREAD)
    values = state["values"]
    assert values["stats"]["ticks"] == ticks0 + 1
    assert values["stats"]["events_folded"] == folded0 + written
    assert "devtest/latency_ms" in values["metrics"]
    assert values["agents"]["devtest"]["heartbeats"] == 1

    summary, perf, rows = await _shared_view(server.db_url)
    assert int(summary["stats"]["ticks"]) == ticks0 + 1
    assert int(summary["stats"]["events_folded"]) == folded0 + written
    assert summary["inbox"]["pending"] == 0
    # Under the server nothing deletes the rows after the run (``bga`` does it in
    # graph.runner): they stay in the inbox, marked folded, until the next run's fold.
    assert rows <= written
    series = perf["series"]["devtest/latency_ms"]
    assert series["count"] == 7
    assert (series["min"], series["max"]) == (1.0, 7.0)

    # A second server run folds nothing again; a `bga`-style tick on the same file sees the
    # server's checkpoint and the server sees its tick.
    again = await client.runs.wait(THREAD, "system", input={})
    assert again["stats"]["events_folded"] == folded0 + written
    assert again["stats"]["ticks"] == ticks0 + 2
    assert (await _shared_view(server.db_url))[2] == 0  # that fold deleted them unread
    async with SharedState.open(server.db_url, producer="tests") as shared:
        report = await runner.tick(shared, wait=30)
    assert report.events_folded == 0
    values = (await client.threads.get_state(THREAD))["values"]
    assert values["stats"]["ticks"] == ticks0 + 3
    assert values["tick"]["n"] == ticks0 + 3
    summary, perf, _ = await _shared_view(server.db_url)
    assert perf["series"]["devtest/latency_ms"]["count"] == 7
    assert int(summary["stats"]["events_folded"]) == folded0 + written


async def test_a_cron_on_the_system_thread_is_accepted_and_deleted(
    server: DevServer, client
) -> None:
    cron = await client.crons.create_for_thread(THREAD, "system", schedule="* * * * *")
    try:
        assert cron["thread_id"] == THREAD
        assert cron["schedule"] == "* * * * *"
        assert cron["cron_id"] in {c["cron_id"] for c in
                                   await client.crons.search(thread_id=THREAD, limit=100)}
    finally:
        await client.crons.delete(cron["cron_id"])
    assert cron["cron_id"] not in {c["cron_id"] for c in
                                   await client.crons.search(thread_id=THREAD, limit=100)}


async def test_a_user_graph_forks_from_an_old_checkpoint_and_continues_from_the_fork(
    server: DevServer, client
) -> None:
    thread = (await client.threads.create())["thread_id"]
    done = await client.runs.wait(thread, USER_GRAPH, input={"log": ["in"]})
    assert done["log"] == ["in", "a", "b"]
    history = await client.threads.get_history(thread, limit=20)
    (old,) = [h for h in history if h["values"].get("log") == ["in", "a"]]
    assert old["next"] == ["b"]
    head = history[0]["checkpoint"]["checkpoint_id"]

    fork = await client.threads.update_state(thread, {"log": ["edit"]}, as_node="a",
                                             checkpoint_id=old["checkpoint"]["checkpoint_id"])
    forked = await client.threads.get_state(thread)
    assert forked["checkpoint"]["checkpoint_id"] == fork["checkpoint"]["checkpoint_id"]
    assert forked["parent_checkpoint"]["checkpoint_id"] == old["checkpoint"]["checkpoint_id"]
    assert forked["values"]["log"] == ["in", "a", "edit"] and forked["next"] == ["b"]

    continued = await client.runs.wait(thread, USER_GRAPH, input=None)

    assert continued["log"] == ["in", "a", "edit", "b"]
    assert (await client.threads.get_state(thread))["values"]["log"] == continued["log"]
    left = await client.threads.get_state(thread, checkpoint_id=head)  # the old branch stays
    assert left["values"]["log"] == ["in", "a", "b"]
    copy = await client.threads.copy(thread)  # the saver's acopy_thread
    assert (await client.threads.get_state(copy["thread_id"]))["values"] == \
        {"log": continued["log"]}


async def test_the_system_thread_refuses_a_fork_over_http_with_the_reason(
    server: DevServer, client
) -> None:
    import httpx

    for _ in range(2):
        await client.runs.wait(THREAD, "system", input={})
    history = await client.threads.get_history(THREAD, limit=10)
    assert len(history) >= 2
    head = await client.threads.get_state(THREAD)
    old = history[1]["checkpoint"]["checkpoint_id"]

    with pytest.raises(httpx.HTTPStatusError) as refused:
        await client.threads.update_state(THREAD, {"stats": {"edits": 1}}, as_node="optimize",
                                          checkpoint_id=old)
    assert refused.value.response.status_code == 400
    detail = refused.value.response.json()["detail"]
    assert "linear history" in detail and "bga restore" in detail
    assert old in detail and "undo the events folded since" in detail
    with pytest.raises(Exception, match=r"ForkRefused: .*linear history.*bga restore"):
        await client.runs.wait(THREAD, "system", input=None, checkpoint_id=old)  # a replay
    after = await client.threads.get_state(THREAD)
    assert after["checkpoint"] == head["checkpoint"] and after["values"] == head["values"]
    # the newest checkpoint still takes an update, as on any thread
    await client.threads.update_state(THREAD, {"stats": {"edits": 1}}, as_node="optimize")
    assert (await client.threads.get_state(THREAD))["values"]["stats"]["edits"] == 1


async def test_the_server_finds_every_optional_method_of_our_saver(
    server: DevServer, client
) -> None:
    await client.runs.wait((await client.threads.create())["thread_id"], USER_GRAPH,
                           input={"log": []})
    log = server.log.read_text(errors="replace")
    assert "Using custom checkpointer: CasSqliteSaver" in log, server.log_tail()
    for missing in ("missing adelete_thread", "missing adelete_for_runs",
                    "missing acopy_thread", "missing aprune"):
        assert missing not in log
