"""``bga run`` as real processes: clean stop on signals, leader election, crash recovery.

Every test runs on a SQLite file, a PostgreSQL schema and a Redis key prefix
(``shared_db_url``): the leader and fold locks are file locks, session advisory locks and
``SET NX PX`` keys, each released (or taken over) at once when their process dies. Every wait
is bounded; children are SIGKILLed at the end of each test whatever happened.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from state import SharedState
from state.backends import make_backend
from tests.integration.test_cli import (
    BgaProcess,
    Children,
    child_env,
    flat,
    metric_count,
    read_state,
    run_bga,
    system_state,
    ticks_of,
)
from tests.integration.workers import is_postgres, wait_sessions_gone

pytestmark = pytest.mark.slow

WAIT_S = 60.0
INTERVAL = "0.2"


@pytest.fixture
def url(shared_db_url: str) -> str:
    """The database every process of the test shares (a URL passed as one argv item: no shell
    quoting, so PostgreSQL's ``?options=-csearch_path%3D...`` goes through as it is)."""
    return shared_db_url


def wait_until(condition: Callable[[], bool], what: str, *watch: BgaProcess,
               timeout: float = WAIT_S) -> None:
    """Poll ``condition``; fail (with the watched children's output) on timeout or if a
    watched child exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not condition():
        for child in watch:
            if child.proc.poll() is not None:
                pytest.fail(f"{child.name} exited while waiting for {what}: {child.describe()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s: "
                        + "\n".join(child.describe() for child in watch))
        time.sleep(0.1)


def stopped_after(child: BgaProcess) -> int:
    said = re.search(r"scheduler stopped cleanly after (\d+) ticks", flat(child.output()))
    assert said, child.describe()
    return int(said.group(1))


async def _locks_free(url: str) -> bool:
    backend = make_backend(url)
    await backend.setup()
    try:
        async with backend.fold_lock(wait=0), backend.leader_lock(wait=0):
            return True
    finally:
        await backend.aclose()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_ends_the_scheduler_cleanly_after_whole_ticks(
    children: Children, url: str, sig: signal.Signals
) -> None:
    run = children.start("run", "run", "--db", url, "--interval", INTERVAL)
    wait_until(lambda: ticks_of(url) >= 3, "3 ticks", run)

    run.proc.send_signal(sig)

    assert run.wait_exit(30) == 0, run.describe()
    n = stopped_after(run)
    assert n >= 3
    assert run.tick_lines() == n  # every tick it ran finished and was reported
    state = read_state(url)
    summary = system_state(url)
    assert int(summary["stats"]["ticks"]) == n
    assert state["tick"]["n"] == n
    assert summary["values"]["last_tick"]["n"] == n
    assert summary["inbox"]["pending"] == 0
    assert asyncio.run(_locks_free(url))  # it released the fold and leader locks


def test_one_leader_ticks_and_the_standby_takes_over_when_it_dies(
    children: Children, url: str
) -> None:
    first = children.start("first", "run", "--db", url, "--interval", INTERVAL)
    second = children.start("second", "run", "--db", url, "--interval", INTERVAL)

    def standing_by() -> list[BgaProcess]:
        return [c for c in (first, second) if "standing by" in flat(c.output())]

    wait_until(lambda: bool(standing_by()), "scheduler standing by", first, second)
    (standby,) = standing_by()
    leader = second if standby is first else first
    wait_until(lambda: ticks_of(url) >= 3, "3 ticks", first, second)
    seen = ticks_of(url)
    wait_until(lambda: ticks_of(url) >= seen + 3, "3 more ticks", first, second)
    assert standby.tick_lines() == 0, standby.describe()
    assert "took over" not in flat(standby.output())
    assert leader.tick_lines() >= 3
    assert "standing by" not in flat(leader.output())

    leader.kill()  # SIGKILL: no cleanup, the OS drops its locks
    at_kill = ticks_of(url)
    standby.wait_for("took over as the scheduler", timeout=WAIT_S)
    wait_until(lambda: ticks_of(url) >= at_kill + 3, "ticks after the takeover", standby)

    standby.proc.send_signal(signal.SIGTERM)
    assert standby.wait_exit(30) == 0, standby.describe()
    taken_over = stopped_after(standby)
    assert taken_over >= 3
    assert standby.tick_lines() == taken_over
    final = ticks_of(url)
    # The leader may have committed one last tick that SIGKILL kept it from printing.
    assert leader.tick_lines() + taken_over <= final <= leader.tick_lines() + taken_over + 1
    assert read_state(url)["tick"]["n"] == final


WRITER = """
import asyncio, pathlib, sys
from state import SharedState

async def main(url, stop_file):
    stop = pathlib.Path(stop_file)
    done = 0
    async with SharedState.open(url, producer="crash-writer") as shared:
        while not stop.exists():
            await asyncio.gather(*(shared.add_performance_metric(
                {"source_agent": "crash", "name": "w", "value": 1.0}) for _ in range(10)))
            done += 10
            print("ACK", done, flush=True)
            await asyncio.sleep(0.005)
    print("DONE", done, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class ScriptWriter:
    """A process running a writer ``script`` (argv: url, stop file) until ``finish()`` makes
    the stop file; it prints ``ACK n`` per acknowledged write and a last ``DONE ...`` line."""

    script = ""
    wait_s = WAIT_S  # how long it may take to stop

    def __init__(self, url: str, directory: Path) -> None:
        self.stop_file = directory / "stop-writer"
        self.log = directory / "writer.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", self.script, url, str(self.stop_file)], cwd=directory,
                env=child_env(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return self.text()[-3000:]

    def finish(self) -> list[int]:
        """Stop it; the numbers of its ``DONE`` line."""
        self.stop_file.touch()
        assert self.proc.wait(self.wait_s) == 0, self.tail()
        done = re.search(r"^DONE ([\d ]+)$", self.text(), flags=re.MULTILINE)
        assert done, self.tail()
        return [int(n) for n in done.group(1).split()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class MetricWriter(ScriptWriter):
    """A process writing metrics of series ``crash/w`` through the API (``WRITER``) until
    ``stop()``, which returns how many it had acknowledged."""

    script = WRITER

    def acked(self) -> bool:
        return "ACK" in self.text()

    def stop(self) -> int:
        (acked,) = self.finish()
        return acked


def test_killing_the_scheduler_mid_tick_never_loses_or_doubles_an_event(
    children: Children, url: str, tmp_path: Path
) -> None:
    writer = MetricWriter(url, tmp_path)
    rng = random.Random(1234)
    try:
        wait_until(writer.acked, "a first acknowledged write")
        for i in range(4):
            app = f"bga-test-{uuid.uuid4().hex[:12]}-run{i}"  # its PostgreSQL sessions' name
            run = children.start(f"run{i}", "run", "--db", url, "--interval", "0.05",
                                 env=child_env(PGAPPNAME=app))
            # A scheduler that died by SIGKILL must not keep the next one standing by.
            wait_until(lambda r=run: r.tick_lines() >= 1, "a tick", run)
            assert "standing by" not in flat(run.output())
            time.sleep(rng.uniform(0.0, 0.3))
            run.kill()
            if is_postgres(url):  # its locks go when the server has ended its sessions
                left = wait_sessions_gone(url, app, WAIT_S)
                assert not left, f"{left} session(s) of a killed scheduler: {run.describe()}"
            assert writer.proc.poll() is None, writer.tail()
        acknowledged = writer.stop()
    finally:
        writer.kill()
    assert acknowledged > 0
    assert ticks_of(url) >= 4  # every killed scheduler had ticked at least once

    last = run_bga("tick", "--db", url, cwd=tmp_path)
    left = re.search(r"folded (\d+) events", flat(last.stdout))
    assert left, last.stdout
    assert int(left.group(1)) < acknowledged  # the killed schedulers had folded the rest

    summary = system_state(url)
    assert metric_count(url, "crash/w") == acknowledged
    assert int(summary["stats"]["events_folded"]) == acknowledged
    assert int(summary["stats"].get("quarantined", 0)) == 0
    assert summary["inbox"]["pending"] == 0
    assert asyncio.run(_inbox_rows(url)) == 0


async def _inbox_rows(url: str) -> int:
    async with SharedState.open(url, producer="tests", read_only=True) as shared:
        return await shared.backend.pending_count()
