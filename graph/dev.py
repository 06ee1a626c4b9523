"""Entry points for ``langgraph dev`` (see langgraph.json).

The server compiles the graph with its own checkpointer, so we give it an uncompiled graph and
a checkpointer factory on the same database ``bga`` uses (``BGA_DATABASE_URL``): the dashboard
and the CLI read exactly what the server writes. All node I/O is async (the inbox runs in
worker threads), which the server's blocking-call guard requires.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph

from graph.system import build_system_graph
from state.backends import Backend, make_backend
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


@asynccontextmanager
async def system_graph() -> AsyncIterator[StateGraph]:
    """The system graph, with the inbox of the configured database (one tick per run)."""
    async with _backend() as backend:
        yield build_system_graph(backend)
