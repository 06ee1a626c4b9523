"""A clock that tests move by hand (``SharedState.open(..., clock=FakeClock())``).

The handle stamps its writes with it and a tick run on the handle gives the system graph the
same clock, so a test says "five minutes later" with ``clock.advance(300)`` instead of
sleeping. It starts at the real time: record timestamps given explicitly (a metric's
``timestamp``) are still checked against the real clock.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class FakeClock:
    """Unix time that moves only when told to."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds``; returns the new time."""
        assert seconds >= 0, "a clock does not go back"
        self.now += seconds
        return self.now

    @contextlib.contextmanager
    def at(self, when: float) -> Iterator[None]:
        """Read ``when`` inside the block (a write "in the past"), then the time before."""
        saved, self.now = self.now, when
        try:
            yield
        finally:
            self.now = saved
