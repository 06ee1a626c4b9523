"""The alert outbox's public names (its code and tables live with the database object:
``state.backends.outbox``, ``state.backends.migrations``; a backend hands the store out:
``shared.backend.outbox()``). The alert sender (``graph.alerts``), ``bga alerts`` and the
dashboard use it through these."""

from __future__ import annotations

from state.backends.outbox import DROPPED, KEEP_MESSAGES, KEEP_S, PENDING, SENT, OutboxStore

__all__ = ["DROPPED", "KEEP_MESSAGES", "KEEP_S", "PENDING", "SENT", "OutboxStore"]
