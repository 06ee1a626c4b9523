"""The LangSmith Bridge: mirrors runs (traces) into metrics, error patterns and insights.

Sources (one interface, ``base.RunSource``): ``LangSmithSource`` (the LangSmith API through
``langsmith.Client``), ``LocalTraceSource`` (this system's own runs, recorded by
``graph.tracing.LocalTracer``) and ``ExportFileSource`` (JSON Lines exports).
``agent.LangSmithBridgeAgent`` is the agent; ``sync.sync`` runs mirroring passes now
(``bga bridge sync``).
"""

from nodes.langsmith_bridge.base import Chunk, Limits, RunSource, SourceUnavailable
from nodes.langsmith_bridge.records import Malformed, TraceRun, parse_run

__all__ = ["Chunk", "Limits", "Malformed", "RunSource", "SourceUnavailable", "TraceRun",
           "parse_run"]
