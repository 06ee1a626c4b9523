"""Database URLs: the one place a URL is mapped to its dialect (and, for SQLite, its file).

``sqlite:///path/to/state.db`` (default ``./data/state.db``), ``memory://name`` (one
in-process store per name), ``postgresql://...`` or ``postgres://...``, and
``redis://[user:password@]host[:port][/db][?prefix=name]`` or ``rediss://...`` (TLS): every key
of that state lives under ``bga:<db>:<prefix>:`` (``DatabaseUrl.key_prefix``). Every module that
must tell the dialects apart asks ``parse_url``; nothing else compares URL prefixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from state.redact import redact

SQLITE_PREFIX = "sqlite:///"
MEMORY_PREFIX = "memory://"
POSTGRES_PREFIXES = ("postgresql://", "postgres://")
REDIS_PREFIXES = ("redis://", "rediss://")

Dialect = Literal["sqlite", "memory", "postgres", "redis"]
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed database URL: its dialect, and the file (SQLite) or name (memory)."""

    url: str
    dialect: Dialect
    path: Path | None = None  # sqlite only
    name: str = ""  # memory only; redis: the key prefix (``?prefix=``)
    db: int = 0  # redis only: the database number

    @property
    def key_prefix(self) -> str:
        """Redis: the prefix of every key of this state (one namespace per db and prefix)."""
        return f"bga:{self.db}:{self.name}:"

    @property
    def profiles_location(self) -> str:
        """Where the importer's profiles live (README, "Storage: one database object"): a
        sibling SQLite file ``<state>.profiles.db``, a shared in-memory SQLite ``file:`` URI,
        or the PostgreSQL database (and schema) of the state itself. Redis has no SQL
        tables: the importer's profiles are unavailable there (``ProfileStore.open`` says so)."""
        if self.path is not None:
            stem = self.path.name[:-3] if self.path.name.endswith(".db") else self.path.name
            return str(self.path.with_name(f"{stem}.profiles.db"))
        if self.dialect == "memory":
            return f"file:bga-profiles-{self.name or 'default'}?mode=memory&cache=shared"
        return self.url


def parse_url(url: str) -> DatabaseUrl:
    """The dialect of ``url``; ValueError naming the accepted forms for anything else."""
    if not isinstance(url, str):
        raise ValueError(f"database URL must be a string, got {type(url).__name__}")
    if url.startswith(SQLITE_PREFIX):
        raw = url[len(SQLITE_PREFIX):]
        if not raw:
            raise ValueError("sqlite URL has no path (expected sqlite:///path/to/file.db)")
        return DatabaseUrl(url, "sqlite", path=Path(raw))
    if url.startswith(MEMORY_PREFIX):
        return DatabaseUrl(url, "memory", name=url[len(MEMORY_PREFIX):])
    if url.startswith(POSTGRES_PREFIXES):
        return DatabaseUrl(url, "postgres")
    if url.startswith(REDIS_PREFIXES):
        return _parse_redis(url)
    raise ValueError(f"unsupported database URL {redact(url)!r}: use sqlite:///path/to/file.db, "
                     "postgresql://user@host/db, redis://host:port/db or memory://name")


def _parse_redis(url: str) -> DatabaseUrl:
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if not path:
        db = 0
    elif path.isdigit() and len(path) <= 5:
        db = int(path)
    else:
        raise ValueError(f"redis URL {redact(url)!r}: the path must be a database number "
                         f"(redis://host:port/0), got {path!r}")
    if not parts.hostname:
        raise ValueError(f"redis URL {redact(url)!r} has no host (redis://host:port/db)")
    prefixes = parse_qs(parts.query).get("prefix", [""])
    prefix = prefixes[-1]
    if prefix and not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"redis URL {redact(url)!r}: prefix must be 1-64 letters, digits, "
                         f"'_', '-' or '.', got {prefix!r}")
    return DatabaseUrl(url, "redis", name=prefix, db=db)


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database (a profiles location may be a path)."""
    return url.startswith(POSTGRES_PREFIXES)


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///`` URL; ValueError for any other URL."""
    parsed = parse_url(url)
    if parsed.path is None:
        raise ValueError(f"not a sqlite URL: {redact(url)!r} (expected sqlite:///path/to/file.db)")
    return parsed.path
