"""The database object per URL (``sqlite:///path``, ``memory://name``, ``postgresql://...``,
``postgres://...``, ``redis://host:port/db`` or ``rediss://...``): a ``Backend`` owns every
table (Redis: every key) of its database and their migrations. Where each table and
migration lives: README, "Storage: one database object"."""

from __future__ import annotations

from state.backends.base import (
    DEFAULT_FAILOVER_S,
    Backend,
    LockBusy,
    StaleCheckpoint,
    describe_trouble,
)
from state.backends.migrations import SchemaNotReady
from state.backends.url import POSTGRES_PREFIXES, DatabaseUrl, parse_url

DEFAULT_URL = "sqlite:///./data/state.db"


def make_backend(url: str, *, failover_s: float | None = None) -> Backend:
    """The backend for a database URL (not yet set up); ``failover_s`` see ``Backend``."""
    backend: Backend
    dialect = parse_url(url).dialect  # ValueError naming the accepted forms
    if dialect == "sqlite":
        from state.backends.sqlite import SqliteBackend

        backend = SqliteBackend(url)
    elif dialect == "memory":
        from state.backends.memory import MemoryBackend

        backend = MemoryBackend(url)
    elif dialect == "redis":
        from state.backends.redisdb import RedisBackend

        backend = RedisBackend(url)
    else:
        from state.backends.postgres import PostgresBackend

        backend = PostgresBackend(url)
    if failover_s is not None:
        if not 1 <= failover_s <= 3600:
            raise ValueError(f"failover time must be between 1 and 3600 s, got {failover_s:g}")
        backend.failover_s = float(failover_s)
    return backend


__all__ = ["DEFAULT_FAILOVER_S", "DEFAULT_URL", "POSTGRES_PREFIXES", "Backend", "DatabaseUrl",
           "LockBusy", "SchemaNotReady", "StaleCheckpoint", "describe_trouble", "make_backend",
           "parse_url"]
