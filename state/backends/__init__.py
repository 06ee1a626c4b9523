"""Backends chosen by URL: ``sqlite:///path``, ``memory://name``,
``postgresql://...`` (or ``postgres://...``)."""

from __future__ import annotations

from state.backends.base import (
    DEFAULT_FAILOVER_S,
    Backend,
    LockBusy,
    StaleCheckpoint,
    describe_trouble,
)

DEFAULT_URL = "sqlite:///./data/state.db"


def make_backend(url: str, *, failover_s: float | None = None) -> Backend:
    """The backend for a database URL (not yet set up); ``failover_s`` see ``Backend``."""
    backend: Backend
    if url.startswith("sqlite:///"):
        from state.backends.sqlite import SqliteBackend

        backend = SqliteBackend(url)
    elif url.startswith("memory://"):
        from state.backends.memory import MemoryBackend

        backend = MemoryBackend(url)
    elif url.startswith(("postgresql://", "postgres://")):
        from state.backends.postgres import PostgresBackend

        backend = PostgresBackend(url)
    else:
        raise ValueError(
            f"unsupported database URL {url!r}: use sqlite:///path/to/file.db, "
            "postgresql://user@host/db or memory://name")
    if failover_s is not None:
        if not 1 <= failover_s <= 3600:
            raise ValueError(f"failover time must be between 1 and 3600 s, got {failover_s:g}")
        backend.failover_s = float(failover_s)
    return backend


__all__ = ["DEFAULT_FAILOVER_S", "DEFAULT_URL", "Backend", "LockBusy", "StaleCheckpoint",
           "describe_trouble", "make_backend"]
