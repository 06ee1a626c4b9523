"""Entry points for ``langgraph dev`` (see langgraph.json).

The server compiles runs with its own checkpointer, so we give it the system graph compiled
without one, and a checkpointer factory on the same database ``bga`` uses
(``BGA_DATABASE_URL``): the dashboard and the CLI read exactly what the server writes. All node
I/O is async (the inbox runs in worker threads), which the server's blocking-call guard
requires.

The server hands each run the JSON context of its request (``{}`` unless the client sends
one, e.g. ``{"coordinator_only": true}``); the database cannot travel as JSON, so the graph
the factory makes for a run takes a context class whose default database is the one opened
for that run, and whose clock is the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from graph.system import build_system_graph
from state.backends import Backend, make_backend
from state.context import Context
from state.schema import SystemState
from state.settings import database_url

DATABASE_URL = database_url()


@asynccontextmanager
async def _backend() -> AsyncIterator[Backend]:
    backend = make_backend(DATABASE_URL)
    await backend.setup()
    try:
        yield backend
    finally:
        await backend.aclose()


@asynccontextmanager
async def checkpointer() -> AsyncIterator[BaseCheckpointSaver]:
    """The server's checkpointer on the configured database: compare-and-swap on the shared
    state's thread, LangGraph's own behaviour (forks, replays, rollbacks, copies, pruning) on
    every other thread, so graphs of your own can be served next to ``system``."""
    async with _backend() as backend:
        yield backend.checkpointer


def served_context(served: Backend) -> type[Context]:
    """``Context`` whose database defaults to ``served`` (the rest keep their defaults)."""

    @dataclass(frozen=True)
    class ServedContext(Context):
        backend: Backend = field(default=served)

    return ServedContext


@asynccontextmanager
async def system_graph(
) -> AsyncIterator[CompiledStateGraph[SystemState, Context, SystemState, SystemState]]:
    """The system graph on the configured database (one tick per run)."""
    async with _backend() as backend:
        yield build_system_graph(context_schema=served_context(backend))
