"""Fixtures for the multi-process tests: worker processes that never outlive their test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import workers
from tests.integration.test_cli import ROOT, Children, child_env

STARTUP_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 60.0


class Spawner:
    """Starts worker processes with their output in ``log_dir`` and kills leftovers.

    A worker given a PostgreSQL URL connects under an application name of its own, so that
    :meth:`kill` can wait until the server has ended its sessions too (see there)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.sessions: dict[str, tuple[str, str]] = {}  # name -> (PostgreSQL URL, app name)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        assert name not in self.procs, f"duplicate worker name {name}"
        env = None
        url = next((a for a in args if workers.is_postgres(a)), None)
        if url is not None:
            app = f"bga-test-{uuid.uuid4().hex[:12]}-{name}"[:63]
            self.sessions[name] = (url, app)
            env = {**os.environ, "PGAPPNAME": app}  # libpq's default application_name
        proc = workers.spawn(self.log_dir, name, *args, env=env)
        self.procs[name] = proc
        return proc

    def lines(self, name: str) -> list[str]:
        return workers.lines(self.log_dir, name)

    def acked(self, name: str) -> int:
        return workers.acked(self.log_dir, name)

    def describe(self, name: str) -> str:
        proc = self.procs[name]
        tail = self.lines(name)[-3:]
        return (f"worker {name} (pid {proc.pid}, exit {proc.returncode}): stdout tail {tail}, "
                f"stderr: {workers.stderr_of(self.log_dir, name)!r}")

    async def wait_line(self, name: str, predicate, timeout: float = STARTUP_TIMEOUT_S) -> str:
        """First stdout line of worker ``name`` matching ``predicate`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while True:
            for line in self.lines(name):
                if predicate(line):
                    return line
            if proc.poll() is not None:
                for line in self.lines(name):  # it may have printed it just before exiting
                    if predicate(line):
                        return line
                raise AssertionError(f"exited before the expected line: {self.describe(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no expected line after {timeout}s: {self.describe(name)}")
            await asyncio.sleep(0.01)

    async def wait_exit(self, name: str, timeout: float) -> int:
        """Exit code of worker ``name``; fails the test if it runs longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait(10)
                raise AssertionError(f"did not finish within {timeout}s: {self.describe(name)}")
            await asyncio.sleep(0.02)
        return proc.returncode

    def kill(self, name: str) -> None:
        """SIGKILL one worker (if still running) and reap it.

        On PostgreSQL the worker's commits happen in the server: a COMMIT it had sent before
        dying may still be applied after it is gone. Once the server has ended every session
        of the worker, what it committed is final (as it is for SQLite once it is reaped)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        if name in self.sessions:
            url, app = self.sessions[name]
            left = workers.wait_sessions_gone(url, app, SETTLE_TIMEOUT_S)
            assert not left, (f"the server still runs {left} session(s) of the killed worker "
                              f"after {SETTLE_TIMEOUT_S}s: {self.describe(name)}")

    def cleanup(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)


@pytest.fixture
def spawner(tmp_path: Path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    s = Spawner(log_dir)
    try:
        yield s
    finally:
        s.cleanup()


@pytest.fixture
def children(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Children]:
    """``bga`` children sharing the test's ``shared_db_url`` or ``process_db_url``, able to
    load the example agents of ``tests.agents``; all SIGKILLed before the database is torn
    down (it is set up first)."""
    for name in ("shared_db_url", "process_db_url"):
        if name in request.fixturenames:
            request.getfixturevalue(name)
    kids = Children(tmp_path, env=child_env(PYTHONPATH=str(ROOT)))
    try:
        yield kids
    finally:
        kids.cleanup()
