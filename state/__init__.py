"""Shared state of the background-agents system: typed LangGraph state, reducers, backends
and the async SharedState API."""

from state.api import SharedState
from state.models import (
    AgentRecord,
    ErrorPattern,
    Insight,
    InvalidInput,
    OptimizationRecord,
    PerformanceMetric,
)
from state.schema import SYSTEM_THREAD, SystemState

__all__ = [
    "SYSTEM_THREAD",
    "AgentRecord",
    "ErrorPattern",
    "Insight",
    "InvalidInput",
    "OptimizationRecord",
    "PerformanceMetric",
    "SharedState",
    "SystemState",
]
