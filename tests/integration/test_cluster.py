"""Many processes: ``bga worker`` runs chosen agents, ``bga run --coordinator-only``
coordinates, several coordinators elect one leader and fail over when it is SIGKILLed.

In-process tests run on every backend (``db_url``); the multi-process ones on a SQLite file
and on a PostgreSQL schema (``process_db_url``). Every wait is bounded; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from graph import runner, worker
from nodes.profile_import.store import ProfileStore, profiles_location
from state import InvalidInput, SharedState, events
from state.backends import LockBusy, make_backend
from state.queries import config_of
from tests.agents.example import ECHO
from tests.integration.test_cli import (
    BgaProcess,
    Children,
    flat,
    metric_count,
    read_state,
    run_bga,
    system_state,
    ticks_of,
)
from tests.integration.test_scheduler import MetricWriter, wait_until
from tests.integration.workers import truth_db

WAIT_S = 60.0


async def configure(shared: SharedState, **agents: dict[str, Any]) -> None:
    await shared.update_config({"agents": agents})


def counter_of(values: dict[str, Any], agent_id: str) -> int:
    return int((((values.get("agent_data") or {}).get(agent_id) or {}).get("value") or {})
               .get("counter", 0))


def series_count(values: dict[str, Any], series: str) -> int:
    """Every value ever recorded in ``series`` (the 1-minute tier of its sketches)."""
    buckets = ((((values.get("metrics") or {}).get(series) or {}).get("tiers") or {})
               .get("1m")) or {}
    return int(sum(agg[0] for agg in buckets.values()))


# -- in process, every backend ----------------------------------------------------------------


async def test_worker_steps_its_agents_and_the_coordinator_leaves_them_to_it(db_url: str
                                                                              ) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        await configure(shared, echo={"class": ECHO, "interval_s": 0.01},
                        other={"class": ECHO, "interval_s": 0.01})
        report = await worker.run(shared, ["echo"], stop=asyncio.Event(), notify=lambda _: None,
                                  max_steps=3)
        assert report.steps == {"echo": 3} and report.failures == 0
        values = await shared.read()
        assert counter_of(values, "echo") == 3  # each step saw the cursor the last one wrote
        assert series_count(values, "echo/ticks") == 3
        hb = values["agents"]["echo"]["hb"]
        me = f"{socket.gethostname()}:{os.getpid()}"
        assert hb["data"]["worker"] == me and hb["data"]["pid"] == os.getpid()
        assert hb["data"]["tick"] is None and hb["status"] == "ok"

        other = make_backend(db_url)  # echo's worker is alive: it holds echo's agent lock
        await other.setup()
        try:
            async with other.agent_lock("echo", wait=0):
                await runner.tick(shared, wait=30)  # so only `other` runs here
        finally:
            await other.aclose()
        values = await shared.read()
        assert values["tick"]["workers"] == {"echo": me}
        assert "other" in values["tick"]["due"]
        assert counter_of(values, "echo") == 3 and counter_of(values, "other") == 1
        assert values["system"]["last_tick"]["value"]["agents_on_workers"] == {"echo": me}

        await runner.tick(shared, wait=30, coordinator_only=True)  # runs no agent at all
        values = await shared.read()
        assert values["tick"]["due"] == []
        assert values["tick"]["coordinator"]["coordinator_only"] is True
        assert values["tick"]["coordinator"]["pid"] == os.getpid()
        assert counter_of(values, "other") == 1


async def test_a_stale_worker_claim_lapses_and_the_coordinator_runs_the_agent(db_url: str
                                                                              ) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        await configure(shared, echo={"class": ECHO, "interval_s": 1})
        long_ago = time.time() - 3600  # far beyond stale_factor x interval
        await shared.write_events([events.heartbeat(
            "echo", {"status": "ok", "step_ms": 1.0, "tick": None, "worker": "gone:1"},
            now=long_ago)])
        await runner.tick(shared, wait=30)
        values = await shared.read()
        assert values["tick"]["workers"] == {}
        assert "echo" in values["tick"]["due"]
        assert counter_of(values, "echo") == 1
        assert "worker" not in values["agents"]["echo"]["hb"]["data"]  # the graph ran it


async def test_a_heartbeat_naming_a_worker_is_no_claim_without_its_agent_lock(db_url: str
                                                                              ) -> None:
    """Anyone can write ``{"worker": "ghost:1"}`` into a heartbeat: it must not make the
    coordinator skip the agent. A claim is the agent lock a worker holds."""
    async with SharedState.open(db_url, producer="tests") as shared:
        await configure(shared, echo={"class": ECHO, "interval_s": 1})
        await shared.update_agent_heartbeat("echo", {"status": "ok", "worker": "ghost:1"})
        for _ in range(3):
            await runner.tick(shared, wait=30)
        values = await shared.read()
        assert counter_of(values, "echo") >= 1  # stepped although a "worker" was reported
        assert "worker" not in values["agents"]["echo"]["hb"]["data"]  # the graph ran it


async def test_a_tick_skips_an_agent_that_another_process_has_claimed(db_url: str) -> None:
    """A worker claims its agent (the agent lock) before its first heartbeat shows: a tick in
    that window must not step the agent from the same cursor."""
    async with SharedState.open(db_url, producer="tests") as shared:
        await configure(shared, echo={"class": ECHO, "interval_s": 0.01})
        other = make_backend(db_url)
        await other.setup()
        try:
            async with other.agent_lock("echo", wait=0):
                await runner.tick(shared, wait=30)
                values = await shared.read()
                assert "echo" in values["tick"]["due"]  # planned: no worker has reported yet
                assert counter_of(values, "echo") == 0  # but not stepped: it is claimed
            await runner.tick(shared, wait=30)
            assert counter_of(await shared.read(), "echo") == 1
        finally:
            await other.aclose()


async def test_bridge_sync_refuses_while_a_worker_steps_the_bridge(db_url: str,
                                                                    tmp_path: Path) -> None:
    """``bga bridge sync`` and a worker stepping the same bridge would mirror from one cursor."""
    from nodes.langsmith_bridge.sync import sync

    export = tmp_path / "runs.jsonl"
    export.write_text("")
    async with SharedState.open(db_url, producer="tests") as shared:
        other = make_backend(db_url)
        await other.setup()
        try:
            async with other.agent_lock("langsmith_bridge", wait=0):
                with pytest.raises(LockBusy, match="agent langsmith_bridge is running"):
                    await sync(shared, path=export, lock_wait=0)
            assert (await sync(shared, path=export, lock_wait=0)).steps == 1
        finally:
            await other.aclose()


async def test_write_events_is_all_or_nothing(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        good = events.agent_data("echo", {"counter": 1})
        with pytest.raises(InvalidInput, match=r"batch\[1\]"):  # fails before anything commits
            await shared.write_events([good, ("data", {"a": "echo", "v": object(), "t": 1.0})])
        assert counter_of(await shared.read(), "echo") == 0
        await shared.write_events([good])
        assert counter_of(await shared.read(), "echo") == 1


async def test_unknown_or_missing_agents_are_named(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        await configure(shared, echo={"class": ECHO, "interval_s": 1})
        config = config_of(await shared.read())
    with pytest.raises(ValueError, match=r"unknown agent.*nope.*configured: .*echo"):
        worker.parse_agents("echo,nope", config)
    with pytest.raises(ValueError, match="names no agent"):
        worker.parse_agents(" , ", config)
    assert worker.parse_agents("echo, echo", config) == ["echo"]


def test_worker_cli_refuses_unknown_agents_and_missing_databases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    missing = run_bga("worker", "--agents", "echo", "--db", url, cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "no state database" in flat(missing.stderr)
    assert not (tmp_path / "state.db").exists()
    run_bga("db", "upgrade", "--db", url, cwd=tmp_path)
    run_bga("db", "upgrade", "--db", url, cwd=tmp_path)  # idempotent
    bad = run_bga("worker", "--agents", "nope", "--db", url, cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert "unknown agent(s) nope" in flat(bad.stderr), bad.stderr


# -- many processes, SQLite file and PostgreSQL ----------------------------------------------


@pytest.fixture
def url(process_db_url: str) -> str:
    return process_db_url


def _configure(url: str, **agents: dict[str, Any]) -> None:
    async def go() -> None:
        async with SharedState.open(url, producer="tests") as shared:
            await configure(shared, **agents)

    asyncio.run(go())


def _flush(url: str) -> None:
    async def go() -> None:
        async with SharedState.open(url, producer="tests") as shared:
            await shared.flush(wait=WAIT_S)

    asyncio.run(go())


@pytest.mark.slow
def test_worker_killed_mid_step_never_loses_or_doubles_a_step(children: Children, url: str
                                                               ) -> None:
    """A step's reports and its new cursor commit together: after any number of SIGKILLs the
    cursor (steps that counted) equals the metrics recorded, with a coordinator folding."""
    _configure(url, echo={"class": ECHO, "interval_s": 0.01})
    coordinator = children.start("coordinator", "run", "--db", url, "--interval", "0.1",
                                 "--coordinator-only")
    rng = random.Random(7)
    for i in range(5):
        w = children.start(f"worker{i}", "worker", "--agents", "echo", "--db", url)
        before = counter_of(read_state(url), "echo")
        wait_until(lambda b=before: counter_of(read_state(url), "echo") > b, "worker steps",
                   w, coordinator)
        time.sleep(rng.uniform(0.0, 0.2))
        w.kill()
    last = children.start("last", "worker", "--agents", "echo", "--db", url, "--steps", "3")
    assert last.wait_exit(WAIT_S) == 0, last.describe()
    assert "steps: echo 3" in flat(last.output())
    coordinator.proc.send_signal(signal.SIGTERM)
    assert coordinator.wait_exit(30) == 0, coordinator.describe()
    _flush(url)
    values = read_state(url)
    steps = counter_of(values, "echo")
    assert steps >= 5 + 3
    assert series_count(values, "echo/ticks") == steps
    assert series_count(values, "echo/step_ms") == steps
    assert values["tick"]["due"] == []  # coordinator-only: the graph never ran echo itself


@pytest.mark.slow
def test_a_second_worker_for_the_same_agent_stands_by_and_takes_over(children: Children,
                                                                     url: str) -> None:
    """Two workers for one agent: one steps it, the other stands by; SIGKILL the first and the
    second takes over from its cursor. Steps counted == metrics recorded, never doubled."""
    _configure(url, echo={"class": ECHO, "interval_s": 0.01})
    first = children.start("first", "worker", "--agents", "echo", "--db", url)
    wait_until(lambda: counter_of(read_state(url), "echo") >= 3, "first worker steps", first)
    second = children.start("second", "worker", "--agents", "echo", "--db", url)
    second.wait_for("echo: running in another process; standing by", timeout=WAIT_S)
    first.kill()
    second.wait_for("echo: took over", timeout=WAIT_S)
    at_takeover = counter_of(read_state(url), "echo")
    wait_until(lambda: counter_of(read_state(url), "echo") >= at_takeover + 3,
               "steps by the second worker", second)
    second.proc.send_signal(signal.SIGTERM)
    assert second.wait_exit(30) == 0, second.describe()
    _flush(url)
    values = read_state(url)
    steps = counter_of(values, "echo")
    assert series_count(values, "echo/ticks") == steps == series_count(values, "echo/step_ms")
    assert values["agents"]["echo"]["hb"]["data"]["pid"] == second.pid


def _leader_pid(url: str) -> int | None:
    coordinator = (read_state(url).get("tick") or {}).get("coordinator") or {}
    return coordinator.get("pid")


@pytest.mark.slow
def test_three_coordinators_fail_over_on_sigkill_and_count_exactly(
    children: Children, url: str, tmp_path: Path
) -> None:
    """Three ``bga run --coordinator-only``, a worker and a producer; the leader is SIGKILLed
    three times (a new standby starts each time). Ticks continue under a new leader each time,
    and at the end every acknowledged event and every worker step is counted exactly once."""
    _configure(url, echo={"class": ECHO, "interval_s": 0.05})
    writer = MetricWriter(url, tmp_path)
    args = ("run", "--db", url, "--interval", "0.1", "--coordinator-only")
    coordinators: dict[int, BgaProcess] = {}
    for i in range(3):
        c = children.start(f"coordinator{i}", *args)
        coordinators[c.pid] = c
    echo = children.start("worker", "worker", "--agents", "echo", "--db", url)
    try:
        wait_until(lambda: ticks_of(url) >= 3 and _leader_pid(url) in coordinators,
                   "a leader ticking", *coordinators.values())
        killed: list[int] = []
        for i in range(3):
            leader = coordinators.pop(_leader_pid(url))
            leader.kill()
            killed.append(leader.pid)
            at_kill = ticks_of(url)
            new = children.start(f"standby{i}", *args)  # keep three coordinators
            coordinators[new.pid] = new
            wait_until(lambda k=at_kill: ticks_of(url) >= k + 3
                       and _leader_pid(url) in coordinators,
                       "ticks under a new leader", *coordinators.values(), echo)
        assert _leader_pid(url) not in killed
        acknowledged = writer.stop()
        echo.wait_for("running echo on")
        echo.proc.send_signal(signal.SIGTERM)
        assert echo.wait_exit(30) == 0, echo.describe()
        for c in coordinators.values():
            c.wait_for("scheduler running on")  # started: its signal handlers are in place
            c.proc.send_signal(signal.SIGTERM)
        for c in coordinators.values():
            assert c.wait_exit(30) == 0, c.describe()
    finally:
        writer.kill()
    _flush(url)
    assert metric_count(url, "crash/w") == acknowledged
    values = read_state(url)
    assert series_count(values, "echo/ticks") == counter_of(values, "echo") > 0
    assert system_state(url)["inbox"]["pending"] == 0


def test_db_upgrade_creates_every_table_once_and_is_idempotent(process_db_url: str,
                                                                 tmp_path: Path) -> None:
    """``bga db upgrade`` twice, then a worker can open the database without creating it;
    the state's and the profiles database's migrations are recorded once each."""
    for _ in range(2):
        out = run_bga("db", "upgrade", "--db", process_db_url, cwd=tmp_path)
        assert "is up to date" in flat(out.stdout)
    store = ProfileStore.open(profiles_location(process_db_url), create=False)
    store.close()
    with truth_db(process_db_url) as query:
        versions = sorted(r[0] for r in query("SELECT version FROM bga_migrations"))
    assert versions and versions == list(range(1, len(versions) + 1))
    profiles = profiles_location(process_db_url)
    if profiles.startswith("postgres"):  # same database; on SQLite a sibling file
        with truth_db(process_db_url) as query:
            done = sorted(r[0] for r in query("SELECT version FROM bga_profile_migrations"))
    else:
        with truth_db(f"sqlite:///{profiles}") as query:
            done = sorted(r[0] for r in query("SELECT version FROM bga_profile_migrations"))
    assert done and done == list(range(1, len(done) + 1))
