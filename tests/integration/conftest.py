"""Fixtures for the multi-process tests: worker processes that never outlive their test."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import workers

STARTUP_TIMEOUT_S = 60.0


class Spawner:
    """Starts worker processes with their output in ``log_dir`` and kills leftovers."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        assert name not in self.procs, f"duplicate worker name {name}"
        proc = workers.spawn(self.log_dir, name, *args)
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
        """SIGKILL one worker (if still running) and reap it."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)

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
