"""The system graph: one run is one tick of the background-agents system.

    fold_inbox -> plan -> run_agent x due agents (parallel, Send) -> review -> optimize
        -> notify -> END

Exported uncompiled (``build_system_graph``) so callers choose the checkpointer: ``bga``
compiles it with the configured backend's saver, ``langgraph dev`` with its own, tests with
theirs.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from nodes.agent_step import agent_node
from nodes.coordinator import REVIEW, RUN_AGENT, plan, review, route
from nodes.notify import NOTIFY, notify
from nodes.optimizer import optimize
from state.backends import Backend
from state.folder import FOLD_NODE, fold_node
from state.schema import SystemState

PLAN = "plan"
OPTIMIZE = "optimize"


def build_system_graph(backend: Backend) -> StateGraph:
    graph = StateGraph(SystemState)
    graph.add_node(FOLD_NODE, fold_node(backend))
    graph.add_node(PLAN, plan)
    graph.add_node(RUN_AGENT, agent_node(backend))
    graph.add_node(REVIEW, review)
    graph.add_node(OPTIMIZE, optimize)
    graph.add_edge(START, FOLD_NODE)
    graph.add_edge(FOLD_NODE, PLAN)
    graph.add_conditional_edges(PLAN, route, [RUN_AGENT, REVIEW])
    graph.add_edge(RUN_AGENT, REVIEW)
    graph.add_edge(REVIEW, OPTIMIZE)
    graph.add_node(NOTIFY, notify)  # alerts, in the same checkpoint as the insights
    graph.add_edge(OPTIMIZE, NOTIFY)
    graph.add_edge(NOTIFY, END)
    return graph
