"""Shared state of the background-agents system: typed LangGraph state, reducers, backends
and the async SharedState API."""

from state.api import SharedState
from state.models import InvalidInput, OptimizationRecord, PerformanceMetric
from state.schema import SYSTEM_THREAD, SystemState

__all__ = [
    "SYSTEM_THREAD",
    "InvalidInput",
    "OptimizationRecord",
    "PerformanceMetric",
    "SharedState",
    "SystemState",
]
