"""The system graph: one run is one tick of the background-agents system.

    fold_inbox -> plan -> run_agent x due agents (parallel, Send) -> review -> optimize
        -> notify -> END

Its nodes take everything they depend on from the run's context (``state.context.Context``:
the database, the clock, ``coordinator_only``), never from a closure or the wall clock, so
the one builder serves ``bga`` (``graph.runner.tick``, with the database's saver),
``langgraph dev`` (``graph.dev``, whose server brings its own saver) and tests (with a fake
clock). To add a step, add its node and put it on the path below.
"""

from __future__ import annotations

from typing import Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from nodes.agent_step import run_agent
from nodes.coordinator import PLAN, REVIEW, RUN_AGENT, plan, review, route
from nodes.notify import NOTIFY, notify
from nodes.optimizer import OPTIMIZE, optimize
from state.context import Context
from state.folder import FOLD_NODE, fold_inbox
from state.schema import SystemState

GRAPH_NAME = "system"


def build_system_graph(*, checkpointer: BaseCheckpointSaver | None = None,
                       context_schema: type[Context] = Context
                       ) -> CompiledStateGraph[SystemState, Context, SystemState, SystemState]:
    """The system graph compiled with ``checkpointer`` (None: the caller's runtime, e.g. the
    ``langgraph dev`` server, attaches its own). Run it with ``context=Context(...)``;
    ``context_schema`` may be a subclass of ``Context`` with defaults (``graph.dev``)."""
    graph = StateGraph(SystemState, context_schema=context_schema)
    graph.add_node(FOLD_NODE, fold_inbox)  # the inbox, exactly once
    graph.add_node(PLAN, plan)  # register configured agents, pick the due ones
    # one step per due agent, in parallel (Send); its input is an AgentTask, not the state,
    # which LangGraph's overloads of add_node cannot express
    graph.add_node(RUN_AGENT, cast(Any, run_agent))
    graph.add_node(REVIEW, review)  # liveness, insight rules, health, bounded state
    graph.add_node(OPTIMIZE, optimize)  # judge applied changes, start a cycle when due
    graph.add_node(NOTIFY, notify)  # alerts, in the same checkpoint as the insights

    graph.add_edge(START, FOLD_NODE)
    graph.add_edge(FOLD_NODE, PLAN)
    graph.add_conditional_edges(PLAN, route, [RUN_AGENT, REVIEW])
    graph.add_edge(RUN_AGENT, REVIEW)
    graph.add_edge(REVIEW, OPTIMIZE)
    graph.add_edge(OPTIMIZE, NOTIFY)
    graph.add_edge(NOTIFY, END)
    return graph.compile(checkpointer=checkpointer, name=GRAPH_NAME)
