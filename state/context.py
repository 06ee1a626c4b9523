"""What a run of a graph over the shared state is given: LangGraph's runtime context.

Nodes take ``runtime: Runtime[Context]`` and read their dependencies from
``runtime.context``: the database (``backend``), the clock and how the tick is run. Nothing
is closed over, and no node reads the wall clock itself: every time a node writes into the
state, or judges the state against (a heartbeat's age, a window, a verification deadline),
comes from ``context.clock()``. Callers pass the real clock (``SharedState.clock``, which is
``time.time`` unless a test gave it another); tests pass a fake one and move it by hand.

Durations (how long a step or a tick took) and budgets (an agent's ``budget_s``) are not
state-visible times: they are measured with ``time.perf_counter`` / enforced by asyncio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from state.backends.base import Backend

Clock = Callable[[], float]
"""Unix time now, in seconds (``time.time`` in production)."""


@dataclass(frozen=True)
class Context:
    """The system graph's ``context_schema``; one per run (``graph.ainvoke(..., context=)``)."""

    backend: Backend
    """The database the state lives in: its inbox (folded by ``fold_inbox``), its agent locks
    (taken by ``run_agent``) and its URL (handed to agents)."""

    clock: Clock = time.time
    """Now, for everything the run writes into the state or judges the state against."""

    coordinator_only: bool = False
    """Run no agent in this tick: worker processes (``bga worker``) run them
    (``bga run --coordinator-only``)."""
