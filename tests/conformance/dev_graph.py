"""A user's graph for the ``langgraph dev`` tests: served next to the system graph with our
checkpointer, on threads of its own (see tests/integration/test_langgraph_dev.py)."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


async def a(state: Log) -> dict[str, Any]:
    return {"log": ["a"]}


async def b(state: Log) -> dict[str, Any]:
    return {"log": ["b"]}


graph = StateGraph(Log)  # uncompiled: the server compiles it with its checkpointer
graph.add_node("a", a)
graph.add_node("b", b)
graph.add_edge(START, "a")
graph.add_edge("a", "b")
graph.add_edge("b", END)
