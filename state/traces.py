"""The local trace store: finished runs of this system's own graph, in the state database.

A LangChain tracer (``nodes.langsmith_bridge.local.LocalTracer``) appends one row per finished
run with the fields LangSmith keeps (id, trace id, parent, name, run type, start/end, status,
error, tags, metadata, token counts, cost, first-token time); the LangSmith Bridge reads them
back in insertion order (``seq``), so its cursor is a single number. Rows are capped
(``KEEP_ROWS``) so the database stays bounded. Records the bridge cannot mirror are kept in a
small quarantine table with their reason, keyed so that quarantining twice is harmless.

SQLite databases get the tables from a migration (``state/backends/sqlite.py``); ``memory://``
URLs use an in-process store shared by every handle on the same URL.
"""

from __future__ import annotations

import abc
import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from state.redact import redact

KEEP_ROWS = 20_000
KEEP_QUARANTINED = 1_000
BUSY_TIMEOUT_S = 60.0

COLUMNS: tuple[str, ...] = (
    "id", "trace_id", "parent_run_id", "project", "name", "run_type", "start_time", "end_time",
    "status", "error", "tags", "metadata", "prompt_tokens", "completion_tokens", "total_tokens",
    "total_cost", "first_token_time", "recorded_at",
)
_JSON_COLUMNS = ("tags", "metadata")

SCHEMA = """
CREATE TABLE IF NOT EXISTS bga_traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL, trace_id TEXT, parent_run_id TEXT, project TEXT NOT NULL,
    name TEXT NOT NULL, run_type TEXT NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL,
    status TEXT NOT NULL, error TEXT, tags TEXT, metadata TEXT,
    prompt_tokens REAL, completion_tokens REAL, total_tokens REAL, total_cost REAL,
    first_token_time REAL, recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bga_trace_quarantine (
    source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, record TEXT,
    at REAL NOT NULL, PRIMARY KEY (source, key)
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class QuarantinedRecord:
    """A record the bridge could not mirror: where it came from, its key, why, a preview."""

    source: str
    key: str
    reason: str
    record: str | None = None


def _preview(record: str | None) -> str | None:
    """What is kept of a quarantined record: bounded, with secrets redacted."""
    return None if record is None else redact(record[:2000])


def _row_values(row: dict[str, Any]) -> tuple:
    out = []
    for col in COLUMNS:
        value = row.get(col)
        if col in _JSON_COLUMNS and value is not None:
            value = orjson.dumps(value, default=str).decode()
        out.append(value)
    return tuple(out)


def _row_dict(values: Sequence[Any]) -> dict[str, Any]:
    seq, *rest = values
    row = dict(zip(COLUMNS, rest, strict=True))
    for col in _JSON_COLUMNS:
        if row[col] is not None:
            try:
                row[col] = orjson.loads(row[col])
            except orjson.JSONDecodeError:
                row[col] = None
    row["seq"] = seq
    return row


class TraceStore(abc.ABC):
    """Append finished runs, read them back after a sequence number, quarantine bad records."""

    url: str

    @abc.abstractmethod
    async def append(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert rows (dicts keyed by ``COLUMNS``) in one transaction; returns how many."""

    @abc.abstractmethod
    async def read_after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` rows with ``seq`` above the given one, oldest first (with ``seq``)."""

    @abc.abstractmethod
    async def first_seq(self) -> int | None:
        """Smallest sequence number still stored (rows below it were pruned)."""

    @abc.abstractmethod
    async def prune(self, keep_rows: int = KEEP_ROWS) -> int:
        """Drop the oldest rows beyond ``keep_rows``; returns how many went."""

    @abc.abstractmethod
    async def quarantine(self, items: Sequence[QuarantinedRecord], at: float) -> None:
        """Keep records that could not be mirrored (idempotent per source and key)."""

    @abc.abstractmethod
    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def aclose(self) -> None:
        return None


class SqliteTraceStore(TraceStore):
    def __init__(self, url: str) -> None:
        from state.backends.sqlite import path_from_url

        self.url = url
        self.path = path_from_url(url)
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA synchronous=NORMAL")
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND "
                                  "name='bga_trace_quarantine'").fetchone()
            if exists is None:  # normally made by the backend's migration
                conn.execute("PRAGMA journal_mode=WAL")
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _run(self, fn, *args):
        async with self._lock:
            return await asyncio.to_thread(lambda: fn(self._connect(), *args))

    async def append(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        values = [_row_values(r) for r in rows]
        marks = ", ".join("?" * len(COLUMNS))

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(f"INSERT INTO bga_traces ({', '.join(COLUMNS)}) "
                                 f"VALUES ({marks})", values)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return len(values)

        return await self._run(run)

    async def read_after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute(f"SELECT seq, {', '.join(COLUMNS)} FROM bga_traces WHERE seq > ? "
                               "ORDER BY seq LIMIT ?", (seq, limit))
            return [_row_dict(r) for r in cur]

        return await self._run(run)

    async def first_seq(self) -> int | None:
        return await self._run(
            lambda c: c.execute("SELECT min(seq) FROM bga_traces").fetchone()[0])

    async def prune(self, keep_rows: int = KEEP_ROWS) -> int:
        def run(conn: sqlite3.Connection) -> int:
            top = conn.execute("SELECT max(seq) FROM bga_traces").fetchone()[0]
            if top is None or top <= keep_rows:
                return 0
            return conn.execute("DELETE FROM bga_traces WHERE seq <= ?",
                                (top - keep_rows,)).rowcount

        return await self._run(run)

    async def quarantine(self, items: Sequence[QuarantinedRecord], at: float) -> None:
        if not items:
            return
        rows = [(q.source, q.key, redact(q.reason[:500]), _preview(q.record), at)
                for q in items]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR IGNORE INTO bga_trace_quarantine "
                                 "(source, key, reason, record, at) VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("DELETE FROM bga_trace_quarantine WHERE at < (SELECT at FROM "
                             "bga_trace_quarantine ORDER BY at DESC LIMIT 1 OFFSET ?)",
                             (KEEP_QUARANTINED,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(run)

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute("SELECT source, key, reason, record, at FROM bga_trace_quarantine "
                               "ORDER BY at DESC, key LIMIT ?", (limit,))
            return [dict(zip(("source", "key", "reason", "record", "at"), r, strict=True))
                    for r in cur]

        return await self._run(run)

    async def aclose(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await asyncio.to_thread(self._conn.close)
                self._conn = None


@dataclass
class _MemoryTraces:
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_seq: int = 1
    quarantine: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


_MEMORY: dict[str, _MemoryTraces] = {}


class MemoryTraceStore(TraceStore):
    """``memory://`` databases: one in-process store per URL, like the memory backend."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._store = _MEMORY.setdefault(url, _MemoryTraces())

    async def append(self, rows: Sequence[dict[str, Any]]) -> int:
        for row in rows:
            stored = dict(zip(COLUMNS, _row_values(row), strict=True))
            self._store.rows.append(_row_dict((self._store.next_seq,
                                               *(stored[c] for c in COLUMNS))))
            self._store.next_seq += 1
        return len(rows)

    async def read_after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self._store.rows if r["seq"] > seq][:limit]

    async def first_seq(self) -> int | None:
        return self._store.rows[0]["seq"] if self._store.rows else None

    async def prune(self, keep_rows: int = KEEP_ROWS) -> int:
        extra = len(self._store.rows) - keep_rows
        if extra <= 0:
            return 0
        del self._store.rows[:extra]
        return extra

    async def quarantine(self, items: Sequence[QuarantinedRecord], at: float) -> None:
        for q in items:
            self._store.quarantine.setdefault((q.source, q.key), {
                "source": q.source, "key": q.key, "reason": redact(q.reason[:500]),
                "record": _preview(q.record), "at": at})
        if len(self._store.quarantine) > KEEP_QUARANTINED:
            newest = sorted(self._store.quarantine.items(), key=lambda kv: -kv[1]["at"])
            self._store.quarantine = dict(newest[:KEEP_QUARANTINED])

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        items = sorted(self._store.quarantine.values(), key=lambda r: (-r["at"], r["key"]))
        return [dict(r) for r in items[:limit]]


def open_store(url: str) -> TraceStore:
    """The trace store of the state database at ``url`` (opened lazily, no I/O here)."""
    if url.startswith("sqlite:///"):
        return SqliteTraceStore(url)
    if url.startswith("memory://"):
        return MemoryTraceStore(url)
    raise ValueError(f"no local trace store for database URL {url!r}")

