"""The one interface every source of runs implements.

A source reads runs after a cursor and yields them in ``Chunk``s. Each chunk carries the
source's cursor *after* it, so the agent can mirror a chunk and store its cursor in one
synchronous step: whatever happens next (a timeout, a crash, a failing request), the metrics
in the shared state and the cursor beside them always describe the same runs. That is what
makes mirroring exactly once.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nodes.langsmith_bridge.records import FeedbackScore, TraceRun
from state.traces import QuarantinedRecord


@dataclass
class Limits:
    """How much one step may read: runs and a monotonic deadline."""

    max_runs: int
    deadline: float
    now: float = field(default_factory=time.time)

    def exhausted(self, read: int) -> bool:
        return read >= self.max_runs or time.monotonic() >= self.deadline


@dataclass
class Chunk:
    """Runs read since the previous chunk, and the source's cursor after them."""

    cursor: dict[str, Any]
    runs: list[TraceRun] = field(default_factory=list)
    feedback: list[FeedbackScore] = field(default_factory=list)
    quarantined: list[QuarantinedRecord] = field(default_factory=list)
    read: int = 0
    skipped: int = 0  # already mirrored (overlapping pages or polls)
    in_progress: int = 0  # seen still running: mirrored once they end
    abandoned: int = 0  # ran longer than the source waits for, or pruned before mirroring
    gauges: list[tuple[str, str, float, str | None]] = field(default_factory=list)
    """(project, metric name, value, unit): project-level totals the source got cheaply."""
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(error type, message): problems worth an error pattern that did not stop the poll."""
    more: bool = False  # the source stopped at the step's limits with runs left to read


class SourceUnavailable(RuntimeError):
    """The source failed after its retries; ``retry_after`` says when to try again."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 fatal: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.fatal = fatal


class RunSource(abc.ABC):
    """Where runs come from: LangSmith, the local trace store or an export file."""

    kind: str = "source"
    key: str
    """Identifies the source's cursor in the agent's data (never contains a secret)."""

    host_url: str | None = None
    """Base of links to runs in the LangSmith UI, when the source has one."""

    @abc.abstractmethod
    def poll(self, cursor: dict[str, Any] | None, limits: Limits) -> AsyncIterator[Chunk]:
        """Read runs after ``cursor`` until caught up or ``limits`` are reached."""

    async def aclose(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "key": self.key}
