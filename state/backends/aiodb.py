"""Turns on a backend's own connections, for a store whose SQL is written once for every
dialect (the alert outbox, ``state.backends.outbox``; the linear threads' checkpoint entries,
``state.backends.tree``, through ``AiosqliteSql`` / ``PostgresSql`` on a saver's connection).

SQL is in SQLite's spelling with ``?`` placeholders and no literal ``?`` or ``%``, as in
``state.backends.syncdb``; the PostgreSQL side swaps the placeholders for ``%s`` and keeps
parameters free of NUL characters (``nul_free``). A turn gives one caller the connection (a
SQLite backend's write connection under its lock, or one connection of a PostgreSQL
backend's pool); ``write=True`` makes the turn one transaction holding the write lock: all or
nothing.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from state.backends.syncdb import nul_free

if TYPE_CHECKING:
    import aiosqlite
    from psycopg import AsyncCursor
    from psycopg_pool import AsyncConnectionPool

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


class Sql(abc.ABC):
    """One caller's statements on a connection (rows are tuples)."""

    @abc.abstractmethod
    async def all(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """The rows of a query (none for a statement that returns none)."""

    @abc.abstractmethod
    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement for each parameter row."""

    async def where_in(self, sql: str, values: Sequence[Any]) -> Rows:
        """``sql`` ending in ``WHERE <column>`` completed with "is one of ``values``"."""
        out: Rows = []
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            out.extend(await self.all(f"{sql} IN ({','.join('?' * len(chunk))})", chunk))
        return out


class AsyncDb(abc.ABC):
    """Where a store's turns run: a backend's connection or pool (the backend closes it)."""

    @abc.abstractmethod
    def turn(self, *, write: bool = False) -> contextlib.AbstractAsyncContextManager[Sql]:
        """The connection to this caller alone; ``write``: in one write transaction."""


async def _settled(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; a cancelled caller still waits for the thread to
    finish (a statement still running must not overlap the ROLLBACK that follows)."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await work
        raise


class _SqliteSql(Sql):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _all(self, sql: str, params: Sequence[Any]) -> Rows:
        cur = self._conn.cursor()
        cur.row_factory = None  # tuples, whatever the connection's row factory
        return list(cur.execute(sql, tuple(params)).fetchall())

    async def all(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return await _settled(self._all, sql, params)

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await _settled(self._conn.executemany, sql, [tuple(r) for r in rows])


class AiosqliteSql(Sql):
    """Statements on an ``aiosqlite`` connection (a LangGraph SQLite saver's), inside the
    caller's transaction: the caller holds the saver's lock."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def all(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        async with self._conn.execute(sql, tuple(params)) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._conn.executemany(sql, [tuple(r) for r in rows])


class SqliteAsyncDb(AsyncDb):
    """A SQLite connection that ``lock`` gives to one turn at a time (a backend's write
    connection and its lock); ``BEGIN IMMEDIATE`` is the write lock."""

    def __init__(self, conn: sqlite3.Connection, lock: asyncio.Lock) -> None:
        self._conn = conn
        self._lock = lock

    def _rollback(self) -> None:
        if self._conn.in_transaction:  # disk full: SQLite has already rolled it back
            self._conn.execute("ROLLBACK")

    @contextlib.asynccontextmanager
    async def turn(self, *, write: bool = False) -> AsyncIterator[Sql]:
        async with self._lock:
            if not write:
                yield _SqliteSql(self._conn)
                return
            try:
                await _settled(self._conn.execute, "BEGIN IMMEDIATE")
                yield _SqliteSql(self._conn)
                await _settled(self._conn.execute, "COMMIT")
            except BaseException:
                await asyncio.shield(_settled(self._rollback))
                raise


class PostgresSql(Sql):
    def __init__(self, cur: AsyncCursor[tuple[Any, ...]]) -> None:
        self._cur = cur

    async def all(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        await self._cur.execute(sql.replace("?", "%s"), nul_free(params))
        return list(await self._cur.fetchall()) if self._cur.description else []

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._cur.executemany(sql.replace("?", "%s"), [nul_free(r) for r in rows])


class PostgresAsyncDb(AsyncDb):
    """A PostgreSQL backend's pool: each turn on one of its connections. A connection the
    server ended fails the turn that finds it so, and the pool replaces it: the next turn
    has a new session."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def turn(self, *, write: bool = False) -> AsyncIterator[Sql]:
        from psycopg.rows import tuple_row

        async with self._pool.connection() as conn, \
                (conn.transaction() if write else contextlib.nullcontext()), \
                conn.cursor(row_factory=tuple_row) as cur:
            yield PostgresSql(cur)
