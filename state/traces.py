"""The local trace store's public names (its code and tables live with the database object:
``state.backends.traces``, ``state.backends.migrations``). The local tracer writes through
these, the LangSmith Bridge reads through them."""

from __future__ import annotations

from state.backends.traces import (
    COLUMNS,
    KEEP_QUARANTINED,
    KEEP_ROWS,
    QUARANTINE_COLUMNS,
    MemoryTraceStore,
    PostgresTraceStore,
    QuarantinedRecord,
    SqliteTraceStore,
    TraceStore,
    has_store,
    open_store,
)

__all__ = ["COLUMNS", "KEEP_QUARANTINED", "KEEP_ROWS", "QUARANTINE_COLUMNS", "MemoryTraceStore",
           "PostgresTraceStore", "QuarantinedRecord", "SqliteTraceStore", "TraceStore",
           "has_store", "open_store"]
