"""Real faults under real processes: a PostgreSQL restart under three coordinators, a worker
and a producer (on a server this test starts itself), and a full disk under a SQLite
scheduler (a small tmpfs). Each is survived: every process goes on, says what happened in a
line, and at the end every acknowledged event and worker step is counted exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from state import SharedState
from tests.agents.example import ECHO
from tests.integration import pgserver
from tests.integration.test_cli import ROOT, BgaProcess, Children, child_env, metric_count
from tests.integration.test_cluster import counter_of, series_count
from tests.integration.test_scheduler import ScriptWriter, wait_until

WAIT_S = 90.0

# A producer that keeps writing through trouble: a write that fails is not acknowledged (the
# handle found out it did not commit); one whose outcome stayed unknown is counted apart.
WRITER = """
import asyncio, pathlib, sys
from state import SharedState
from state.api import CommitUnknown

async def main(url, stop_file):
    stop = pathlib.Path(stop_file)
    acked = failed = unknown = 0
    async with SharedState.open(url, producer="fault-writer") as shared:
        while not stop.exists():
            try:
                await shared.add_performance_metrics(
                    [{"source_agent": "fault", "name": "w", "value": 1.0}] * 10)
            except CommitUnknown:
                unknown += 10
            except Exception as exc:
                failed += 10
                print("FAILED", type(exc).__name__, flush=True)
                await asyncio.sleep(0.05)
            else:
                acked += 10
                print("ACK", acked, flush=True)
            await asyncio.sleep(0.01)
    print("DONE", acked, unknown, flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Writer(ScriptWriter):
    """``WRITER`` in its own process: batches of 10 metrics, counted acknowledged, failed or
    of unknown outcome (``CommitUnknown``)."""

    script = WRITER
    wait_s = WAIT_S

    def acked(self) -> int:
        found = re.findall(r"^ACK (\d+)$", self.text(), flags=re.MULTILINE)
        return int(found[-1]) if found else 0

    def failed(self) -> int:
        return len(re.findall(r"^FAILED ", self.text(), flags=re.MULTILINE))

    def stop(self) -> tuple[int, int]:
        acked, unknown = self.finish()
        return acked, unknown


def _values(url: str) -> dict[str, Any]:
    """The state now, or {} while the database cannot answer (it is restarting)."""
    async def go() -> dict[str, Any]:
        async with SharedState.open(url, producer="tests", read_only=True) as shared:
            return await shared.read()

    try:
        return asyncio.run(go())
    except Exception:
        return {}


def _tick_n(url: str) -> int:
    return int((_values(url).get("tick") or {}).get("n", 0))


def _no_tracebacks(*procs: BgaProcess) -> None:
    for p in procs:
        err = p.err_path.read_text(errors="replace")
        assert "Traceback" not in err, p.describe()


@pytest.fixture
def own_postgres() -> Iterator[pgserver.PgServer]:
    if pgserver.find_bin() is None:
        pytest.skip(pgserver.MISSING)
    with pgserver.own_server() as server:
        yield server


@pytest.mark.slow
@pytest.mark.postgres
def test_a_postgres_restart_under_three_coordinators_is_survived_with_exact_counts(
    own_postgres: pgserver.PgServer, tmp_path: Path
) -> None:
    url = own_postgres.url
    kids = Children(tmp_path, env=child_env(PYTHONPATH=str(ROOT)))

    async def configure() -> None:
        async with SharedState.open(url, producer="tests") as shared:
            await shared.update_config({"agents": {"echo": {"class": ECHO,
                                                            "interval_s": 0.05}}})

    asyncio.run(configure())
    writer = Writer(url, tmp_path)
    try:
        args = ("run", "--db", url, "--interval", "0.2", "--coordinator-only",
                "--failover-s", "3")
        coordinators = [kids.start(f"coordinator{i}", *args) for i in range(3)]
        echo = kids.start("worker", "worker", "--agents", "echo", "--db", url)
        everyone = (*coordinators, echo)
        wait_until(lambda: _tick_n(url) >= 3 and counter_of(_values(url), "echo") >= 3
                   and writer.acked() > 0, "ticks, steps and writes", *everyone)
        for c in coordinators:
            c.wait_for("scheduler running on")
        before = (_tick_n(url), counter_of(_values(url), "echo"), writer.acked())
        own_postgres.restart()  # every session ends: AdminShutdown, then refused connections
        wait_until(lambda: _tick_n(url) >= before[0] + 5, "ticks after the restart", *everyone)
        wait_until(lambda: counter_of(_values(url), "echo") >= before[1] + 3,
                   "worker steps after the restart", *everyone)
        wait_until(lambda: writer.acked() > before[2] + 50, "writes after the restart",
                   *everyone)
        acknowledged, unknown = writer.stop()
        for p in everyone:
            p.proc.send_signal(signal.SIGTERM)
        for p in everyone:
            assert p.wait_exit(30) == 0, p.describe()
    finally:
        writer.kill()
        kids.cleanup()
    _no_tracebacks(*everyone)
    said = " ".join(c.output() for c in everyone)
    assert re.search(r"server (shut the connection down|unreachable|is shutting down)|"
                     r"connection to the server lost", " ".join(said.split())), said[-3000:]

    async def flush() -> None:
        async with SharedState.open(url, producer="tests") as shared:
            await shared.flush(wait=WAIT_S)

    asyncio.run(flush())
    assert unknown == 0  # every lost reply was resolved: the counts below are exact
    assert metric_count(url, "fault/w") == acknowledged > 0
    values = _values(url)
    assert series_count(values, "echo/ticks") == counter_of(values, "echo") > before[1]


# -- a full disk under SQLite ----------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(where: Path, size_mb: int) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the file system is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            block = bytes(chunk)
            while True:
                try:
                    written += f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


@pytest.mark.slow
def test_a_full_disk_under_sqlite_is_survived_and_ticking_resumes(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", 24) as disk:
        url = f"sqlite:///{disk / 'state.db'}"
        kids = Children(tmp_path, env=child_env(PYTHONPATH=str(ROOT)))
        writer: Writer | None = None
        try:
            run = kids.start("run", "run", "--db", url, "--interval", "0.1", "--failover-s", "3")
            run.wait_for("scheduler running on")
            writer = Writer(url, tmp_path)
            wait_until(lambda: _tick_n(url) >= 3 and writer.acked() > 0, "ticks and writes",
                       run)
            filler = disk / "filler"
            assert fill(filler) > 0
            wait_until(lambda: "disk full at" in " ".join(run.output().split()),
                       "the scheduler saying the disk is full", run)
            wait_until(lambda: writer.failed() > 0, "a refused write", run)
            full_at = _tick_n(url)
            filler.unlink()  # space is back
            wait_until(lambda: _tick_n(url) >= full_at + 5, "ticks after space was freed", run)
            wait_until(lambda: "works again" in run.output(), "the scheduler saying so", run)
            acknowledged, unknown = writer.stop()
            run.proc.send_signal(signal.SIGTERM)
            assert run.wait_exit(30) == 0, run.describe()
        finally:
            if writer is not None:
                writer.kill()
            kids.cleanup()
        _no_tracebacks(run)
        lines = [" ".join(line.split()) for line in run.output().splitlines()]
        full = [line for line in lines if "disk full at" in line]
        assert full and all(line.count("disk full at") == 1 for line in full), lines

        async def flush() -> None:
            async with SharedState.open(url, producer="tests") as shared:
                await shared.flush(wait=WAIT_S)

        asyncio.run(flush())
        assert unknown == 0
        assert metric_count(url, "fault/w") == acknowledged > 0
