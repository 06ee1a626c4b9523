"""Backends chosen by URL: ``sqlite:///path``, ``memory://name``,
``postgresql://...`` (or ``postgres://...``)."""

from __future__ import annotations

from state.backends.base import Backend, LockBusy, StaleCheckpoint

DEFAULT_URL = "sqlite:///./data/state.db"


def make_backend(url: str) -> Backend:
    """The backend for a database URL (not yet set up)."""
    if url.startswith("sqlite:///"):
        from state.backends.sqlite import SqliteBackend

        return SqliteBackend(url)
    if url.startswith("memory://"):
        from state.backends.memory import MemoryBackend

        return MemoryBackend(url)
    if url.startswith(("postgresql://", "postgres://")):
        from state.backends.postgres import PostgresBackend

        return PostgresBackend(url)
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///path/to/file.db, "
        "postgresql://user@host/db or memory://name")


__all__ = ["DEFAULT_URL", "Backend", "LockBusy", "StaleCheckpoint", "make_backend"]
