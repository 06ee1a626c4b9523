"""The system graph: one run is one tick of the background-agents system.

fold_inbox -> review -> END. Exported uncompiled (``build_system_graph``) so callers choose
the checkpointer: ``bga`` compiles it with the configured backend's saver, tests with theirs.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from nodes.coordinator import review
from state.backends import Backend
from state.folder import FOLD_NODE, fold_node
from state.schema import SystemState

REVIEW_NODE = "review"


def build_system_graph(backend: Backend) -> StateGraph:
    graph = StateGraph(SystemState)
    graph.add_node(FOLD_NODE, fold_node(backend))
    graph.add_node(REVIEW_NODE, review)
    graph.add_edge(START, FOLD_NODE)
    graph.add_edge(FOLD_NODE, REVIEW_NODE)
    graph.add_edge(REVIEW_NODE, END)
    return graph
