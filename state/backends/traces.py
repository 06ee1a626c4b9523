"""The local trace store: finished runs of this system's own graph, in the state database.

A LangChain tracer (``graph.tracing.LocalTracer``) appends one row per finished
run with the fields LangSmith keeps (id, trace id, parent, name, run type, start/end, status,
error, tags, metadata, token counts, cost, first-token time); the LangSmith Bridge reads them
back in insertion order (``seq``), so its cursor is a single number. Rows are capped
(``KEEP_ROWS``) so the database stays bounded. Records the bridge cannot mirror are kept in a
small quarantine table with their reason, keyed so that quarantining twice is harmless.

The tables are migrations of the state database (``state.backends.migrations.STATE``). A
backend hands out a store on its own connection (``Backend.traces()``); ``open_store(url)``
makes one with a connection of its own, which runs the same migrations on first use if the
database has none yet (a store opened before ``SharedState.open``). ``memory://`` URLs use an
in-process store shared by every handle on the same URL. The public names are re-exported by
``state.traces``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import sqlite3
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import orjson

from state.backends.migrations import STATE, migrate
from state.backends.syncdb import (
    CONNECT_TIMEOUT_S,
    PostgresSyncDb,
    SqliteSyncDb,
    nul_free,
    sqlite_connect,
)
from state.backends.url import parse_url
from state.redact import redact

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor
    from psycopg_pool import AsyncConnectionPool

KEEP_ROWS = 20_000
KEEP_QUARANTINED = 1_000

COLUMNS: tuple[str, ...] = (
    "id", "trace_id", "parent_run_id", "project", "name", "run_type", "start_time", "end_time",
    "status", "error", "tags", "metadata", "prompt_tokens", "completion_tokens", "total_tokens",
    "total_cost", "first_token_time", "recorded_at",
)
_JSON_COLUMNS = ("tags", "metadata")
QUARANTINE_COLUMNS: tuple[str, ...] = ("source", "key", "reason", "record", "at")


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


def _quarantine_values(q: QuarantinedRecord, at: float) -> tuple:
    """A quarantined record as stored (``QUARANTINE_COLUMNS``): reason and preview redacted."""
    return (q.source, q.key, redact(q.reason[:500]), _preview(q.record), at)


def _quarantine_cutoff() -> int:
    """OFFSET of the oldest quarantined record kept (the ``KEEP_QUARANTINED``-th newest):
    older ones go, ties with it stay."""
    return max(KEEP_QUARANTINED - 1, 0)


def _row_values(row: dict[str, Any]) -> tuple:
    """A run's row as stored (``COLUMNS``): tags and metadata as JSON text."""
    out = []
    for col in COLUMNS:
        value = row.get(col)
        if col in _JSON_COLUMNS and value is not None:
            value = orjson.dumps(value, default=str).decode()
        out.append(value)
    return tuple(out)


def _row_dict(values: Sequence[Any]) -> dict[str, Any]:
    """A stored row (``seq`` then ``COLUMNS``) as the dict readers get: JSON text decoded."""
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
    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest quarantined records (dicts keyed by ``QUARANTINE_COLUMNS``)."""

    async def aclose(self) -> None:
        """Close the store's connections (it reopens them if used again)."""
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()


class SqliteTraceStore(TraceStore):
    """``sqlite:///`` databases. ``shared`` is a backend's write connection and the lock that
    gives it to one operation at a time; without it the store opens a connection of its own
    on first use (and migrates the database, which is a no-op once it is current)."""

    def __init__(self, url: str, *,
                 shared: tuple[sqlite3.Connection, asyncio.Lock] | None = None) -> None:
        path = parse_url(url).path
        if path is None:
            raise ValueError(f"not a sqlite URL: {redact(url)!r}")
        self.url = url
        self.path = path
        self._shared = shared is not None
        self._conn: sqlite3.Connection | None
        self._conn, self._lock = shared if shared is not None else (None, asyncio.Lock())

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite_connect(self.path)
            try:
                migrate(SqliteSyncDb(conn, str(self.path)), STATE)
            except BaseException:
                conn.close()
                raise
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
            with SqliteSyncDb(conn, str(self.path)).write():
                conn.executemany(f"INSERT INTO bga_traces ({', '.join(COLUMNS)}) "
                                 f"VALUES ({marks})", values)
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
        rows = [_quarantine_values(q, at) for q in items]

        def run(conn: sqlite3.Connection) -> None:
            with SqliteSyncDb(conn, str(self.path)).write():
                conn.executemany("INSERT OR IGNORE INTO bga_trace_quarantine "
                                 "(source, key, reason, record, at) VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("DELETE FROM bga_trace_quarantine WHERE at < (SELECT at FROM "
                             "bga_trace_quarantine ORDER BY at DESC LIMIT 1 OFFSET ?)",
                             (_quarantine_cutoff(),))

        await self._run(run)

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cur = conn.execute("SELECT source, key, reason, record, at FROM bga_trace_quarantine "
                               "ORDER BY at DESC, key LIMIT ?", (limit,))
            return [dict(zip(QUARANTINE_COLUMNS, r, strict=True)) for r in cur]

        return await self._run(run)

    async def aclose(self) -> None:
        if self._shared:  # the backend's connection: the backend closes it
            return
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
            self._store.quarantine.setdefault(
                (q.source, q.key), dict(zip(QUARANTINE_COLUMNS, _quarantine_values(q, at),
                                            strict=True)))
        if len(self._store.quarantine) > KEEP_QUARANTINED:
            newest = sorted(self._store.quarantine.items(), key=lambda kv: -kv[1]["at"])
            self._store.quarantine = dict(newest[:KEEP_QUARANTINED])

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        items = sorted(self._store.quarantine.values(), key=lambda r: (-r["at"], r["key"]))
        return [dict(r) for r in items[:limit]]


def _migrate_postgres(url: str) -> None:
    """Run the state migrations at ``url`` under the backend's migration lock (a store
    opened before ``SharedState.open``); polled, so it never races ``setup()`` nor blocks
    its CREATE INDEX CONCURRENTLY."""
    db = PostgresSyncDb(url)
    try:
        with db.session_lock("migrate"):
            migrate(db, STATE)
    finally:
        db.close()


class PostgresTraceStore(TraceStore):
    """``postgresql://`` databases: the tables in the connection's current schema.

    ``pool`` is a backend's connection pool; without it the store keeps one connection
    (psycopg 3, autocommit), opened on first use and opened again after it broke, and a lock
    gives it to one operation and its transaction at a time, as the SQLite store does.
    Appends take a table lock that only other writers wait for: a sequence hands out numbers
    in the order of the calls, not of the commits, so two appenders at once could commit seq
    8 before seq 7, and a reader that moved its cursor to 8 would never see 7. With the lock,
    numbers are drawn and committed one appender after the other (a rolled-back append still
    leaves a gap in the numbers, which readers step over).
    """

    def __init__(self, url: str, *, pool: AsyncConnectionPool | None = None) -> None:
        if parse_url(url).dialect != "postgres":
            raise ValueError(f"not a PostgreSQL URL: {redact(url)!r}")
        self.url = url
        self._pool = pool
        self._conn: AsyncConnection | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> AsyncConnection:
        if self._conn is not None and not self._conn.closed:  # a broken one is closed too
            return self._conn
        from psycopg import AsyncConnection

        where = redact(self.url)
        try:
            conn = await AsyncConnection.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S,
                                                 autocommit=True, prepare_threshold=0)
        except Exception as exc:
            raise ConnectionError(f"cannot connect to PostgreSQL at {where}: "
                                  f"{redact(str(exc))}".strip()) from exc
        try:
            cur = await conn.execute("SELECT coalesce(current_schema(), ''), "
                                     "to_regclass('bga_trace_quarantine') IS NOT NULL")
            schema, ready = await cur.fetchone() or ("", False)
            if not schema:
                raise ValueError(f"no schema to keep traces in at {where} "
                                 "(does the search_path name a schema that exists?)")
            if not ready:
                await asyncio.to_thread(_migrate_postgres, self.url)
        except BaseException:
            await conn.close()
            raise
        # A store dropped unclosed ends its session when it is collected or at exit, as a
        # dropped sqlite3 connection does.
        if self._finalizer is not None:
            self._finalizer.detach()  # of the connection that broke
        self._finalizer = weakref.finalize(self, conn.pgconn.finish)
        self._conn = conn
        return conn

    @contextlib.asynccontextmanager
    async def _cursor(self, *, transaction: bool = False) -> AsyncIterator[AsyncCursor]:
        """A cursor (tuple rows) to this caller alone, in a transaction if asked; an own
        connection that an error left mid-exchange is dropped (the next call reconnects)."""
        from psycopg.pq import TransactionStatus
        from psycopg.rows import tuple_row

        if self._pool is not None:
            async with self._pool.connection() as conn, \
                    (conn.transaction() if transaction else contextlib.nullcontext()), \
                    conn.cursor(row_factory=tuple_row) as cur:
                yield cur
            return
        async with self._lock:
            conn = await self._connect()
            try:
                async with (conn.transaction() if transaction else contextlib.nullcontext()), \
                        conn.cursor(row_factory=tuple_row) as cur:
                    yield cur
            except BaseException:
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    await conn.close()  # e.g. cancelled mid-statement
                raise

    async def append(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        values = [nul_free(_row_values(r)) for r in rows]
        marks = ", ".join(["%s"] * len(COLUMNS))
        async with self._cursor(transaction=True) as cur:
            await cur.execute("LOCK TABLE bga_traces IN SHARE ROW EXCLUSIVE MODE")
            await cur.executemany(f"INSERT INTO bga_traces ({', '.join(COLUMNS)}) "
                                  f"VALUES ({marks})", values)
        return len(values)

    async def read_after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        async with self._cursor() as cur:
            await cur.execute(f"SELECT seq, {', '.join(COLUMNS)} FROM bga_traces "
                              "WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit))
            return [_row_dict(r) for r in await cur.fetchall()]

    async def first_seq(self) -> int | None:
        async with self._cursor() as cur:
            await cur.execute("SELECT min(seq) FROM bga_traces")
            row = await cur.fetchone()
            return None if row is None else row[0]

    async def prune(self, keep_rows: int = KEEP_ROWS) -> int:
        async with self._cursor() as cur:
            await cur.execute("DELETE FROM bga_traces WHERE seq <= "
                              "(SELECT max(seq) FROM bga_traces) - %s", (keep_rows,))
            return max(cur.rowcount, 0)

    async def quarantine(self, items: Sequence[QuarantinedRecord], at: float) -> None:
        if not items:
            return
        rows = [nul_free(_quarantine_values(q, at)) for q in items]
        async with self._cursor(transaction=True) as cur:
            # one writer at a time, as in SQLite: no deadlock between batches sharing keys
            await cur.execute("LOCK TABLE bga_trace_quarantine IN SHARE ROW EXCLUSIVE MODE")
            await cur.executemany(
                f"INSERT INTO bga_trace_quarantine ({', '.join(QUARANTINE_COLUMNS)}) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)
            await cur.execute("DELETE FROM bga_trace_quarantine WHERE at < (SELECT at FROM "
                              "bga_trace_quarantine ORDER BY at DESC LIMIT 1 OFFSET %s)",
                              (_quarantine_cutoff(),))

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self._cursor() as cur:
            # keys in byte order (as SQLite sorts them), whatever the database's collation
            await cur.execute(
                f"SELECT {', '.join(QUARANTINE_COLUMNS)} FROM bga_trace_quarantine "
                'ORDER BY at DESC, key COLLATE "C" LIMIT %s', (limit,))
            return [dict(zip(QUARANTINE_COLUMNS, r, strict=True)) for r in await cur.fetchall()]

    async def aclose(self) -> None:
        async with self._lock:  # (a pool is the backend's: the backend closes it)
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()


def has_store(url: str) -> bool:
    """Whether the state database at ``url`` can keep local traces (``open_store`` works):
    every database URL ``parse_url`` accepts."""
    try:
        parse_url(url)
    except ValueError:
        return False
    return True


def open_store(url: str) -> TraceStore:
    """A trace store of the state database at ``url`` with its own connection (opened
    lazily, no I/O here); a backend's ``traces()`` shares the backend's instead."""
    try:
        dialect = parse_url(url).dialect
    except ValueError:
        raise ValueError(f"no local trace store for database URL {redact(url)!r}") from None
    if dialect == "sqlite":
        return SqliteTraceStore(url)
    if dialect == "memory":
        return MemoryTraceStore(url)
    if dialect == "redis":
        from state.backends.redisdb import RedisTraceStore

        return RedisTraceStore(url)
    return PostgresTraceStore(url)
