"""Blocking database connections, one class per dialect, for the code that runs in a thread:
the migration runner (``state.backends.migrations``) and the importer's profiles store.

SQL is written in SQLite's spelling with ``?`` placeholders (and no literal ``?`` or ``%``);
``PostgresSyncDb`` swaps the placeholders for ``%s``. DDL is never translated: each dialect's
migrations are spelled out in ``state.backends.migrations``.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from state.backends.url import REDIS_PREFIXES, is_postgres
from state.redact import redact

if TYPE_CHECKING:
    import psycopg

BUSY_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10
LOCK_PREFIX = "bga-lock"  # single bigint advisory locks: hash of prefix + schema + name


def lock_key(schema: str, name: str) -> int:
    """Signed 64-bit advisory lock key for lock ``name`` of the state in ``schema``."""
    digest = hashlib.blake2b(f"{LOCK_PREFIX}:{schema}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def nul_free(values: Sequence[Any]) -> Sequence[Any]:
    """Parameters PostgreSQL text can hold (every store kept there uses it): NUL characters,
    which SQLite keeps, become U+FFFD, so one stray byte does not lose the batch it came in."""
    if any(isinstance(v, str) and "\x00" in v for v in values):
        return [v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in values]
    return values


def sqlite_connect(location: str | Path, *, uri: bool = False,
                   busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    """A SQLite connection as every store here uses it: autocommit (transactions are opened
    explicitly), shareable with a worker thread, waiting up to ``busy_timeout_s`` (default
    ``BUSY_TIMEOUT_S``) for a lock. Opening sets connection options only; it writes nothing."""
    conn = sqlite3.connect(location, uri=uri, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses nothing
    return conn


def file_pragma(conn: sqlite3.Connection, sql: str) -> None:
    """Run a pragma that changes the file (``journal_mode=WAL``, ``auto_vacuum``). Openers of
    a new file race for it, and one that finds another changing the journal mode gets
    "database is locked" at once, without SQLite's busy handler (measured: 3 of 300 races of
    eight first opens): it is tried again, a little later each time, for ``BUSY_TIMEOUT_S``."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            conn.execute(sql).fetchall()
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY \
                    or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Row(Protocol):
    """A result row by column name: ``sqlite3.Row`` or psycopg's ``dict_row``."""

    def __getitem__(self, key: str, /) -> Any: ...

    def keys(self) -> Any: ...


class SyncDb(abc.ABC):
    """One blocking connection. SQL is in SQLite's spelling (``?``)."""

    where: str  # for messages (no password)
    dialect: Literal["sqlite", "postgres"]

    @abc.abstractmethod
    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    @abc.abstractmethod
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    @abc.abstractmethod
    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute a statement; returns the rows it changed (for compare-and-swap)."""

    @abc.abstractmethod
    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def run_before(self, sql: str) -> None:
        """A statement run before a migration's transaction (a file-level setting)."""
        self.run(sql)

    def where_in(self, sql: str, values: Sequence[Any]) -> list[Row]:
        """``sql`` ending in ``WHERE <column>`` completed with "is one of ``values``"."""
        out: list[Row] = []
        for i in range(0, len(values), 500):
            chunk = values[i:i + 500]
            out.extend(self.all(f"{sql} IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` (bulk)."""
        self.many(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                  f"({','.join('?' * len(columns))})", rows)

    @abc.abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether table ``name`` exists (on PostgreSQL: in the connection's schema)."""

    @abc.abstractmethod
    def write(self) -> contextlib.AbstractContextManager[None]:
        """A transaction holding the database's write lock (one writer at a time)."""

    @abc.abstractmethod
    def close(self) -> None: ...


_KEEP_ALIVE: dict[str, sqlite3.Connection] = {}  # in-memory databases live with the process
_KEEP_ALIVE_LOCK = threading.Lock()


class SqliteSyncDb(SyncDb):
    """A SQLite connection (a file in WAL mode, or a shared in-memory ``file:`` URI);
    ``BEGIN IMMEDIATE`` is the write lock."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self.conn = conn
        self.where = where

    @classmethod
    def open(cls, location: str, *, create: bool = True) -> SqliteSyncDb:
        """A connection for bulk writes (the profiles file): a ``file:`` location is a shared
        in-memory database kept alive for the process; ``create=False`` raises
        FileNotFoundError instead of creating a missing file."""
        memory = location.startswith("file:")
        if memory:
            with _KEEP_ALIVE_LOCK:
                if location not in _KEEP_ALIVE:
                    _KEEP_ALIVE[location] = sqlite3.connect(location, uri=True,
                                                            check_same_thread=False)
        elif create:
            Path(location).parent.mkdir(parents=True, exist_ok=True)
        elif not Path(location).exists():
            raise FileNotFoundError(f"no profiles database at {location}")
        conn = sqlite_connect(location, uri=memory)
        conn.row_factory = sqlite3.Row
        if not memory:
            file_pragma(conn, "PRAGMA journal_mode=WAL")
            # checkpoint the WAL every 64 MB, not every 4 MB: bulk imports pay far fewer fsyncs
            conn.execute("PRAGMA wal_autocheckpoint=16384")
            conn.execute("PRAGMA journal_size_limit=67108864")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MB: the identity index stays in memory
        return cls(conn, location)

    def _cursor(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        cur = self.conn.cursor()
        cur.row_factory = sqlite3.Row
        return cur.execute(sql, params)

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._cursor(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._cursor(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def run_before(self, sql: str) -> None:
        file_pragma(self.conn, sql)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def has_table(self, name: str) -> bool:
        return self.one("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (name,)) is not None

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # disk full: SQLite has already rolled it back
                self.conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


class PostgresSyncDb(SyncDb):
    """A psycopg 3 connection (autocommit; ``write`` opens the transactions) in the
    connection's ``current_schema()``. ``write_lock`` names the transaction-scoped advisory
    lock ``write`` takes first (keyed on the schema), so in READ COMMITTED every later
    statement of the transaction sees what the previous writer committed; lock waits give up
    after ``BUSY_TIMEOUT_S`` (``lock_timeout``), as SQLite's ``busy_timeout`` does."""

    dialect = "postgres"

    def __init__(self, url: str, *, write_lock: str | None = None) -> None:
        import psycopg
        from psycopg.rows import dict_row

        self.where = redact(url)  # messages never carry the password
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(
                url, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            raise ConnectionError(f"cannot connect to PostgreSQL at {self.where}: "
                                  f"{redact(str(exc))}".strip()) from exc
        try:
            schema = self.one("SELECT current_schema() AS s")
            if schema is None or schema["s"] is None:
                raise ValueError(f"no schema on the search_path of {self.where} (does the "
                                 "search_path name a schema that exists?)")
            self.schema: str = schema["s"]
            self.conn.execute(f"SET lock_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self._lock = None if write_lock is None else lock_key(self.schema, write_lock)
        except BaseException:
            self.conn.close()
            raise

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql.replace("?", "%s"), nul_free(params)).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql.replace("?", "%s"), nul_free(params)).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql.replace("?", "%s"), nul_free(params)).rowcount

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), [nul_free(r) for r in rows])

    def where_in(self, sql: str, values: Sequence[Any]) -> list[Row]:
        # one statement with an array parameter, not one per 500 values
        return self.conn.execute(f"{sql} = ANY(%s)", (list(nul_free(values)),)).fetchall()

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        # COPY: one round trip for the batch (executemany costs one statement per row)
        with self.conn.cursor() as cur, \
                cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(nul_free(row))

    def has_table(self, name: str) -> bool:
        return self.one("SELECT 1 AS ok FROM information_schema.tables WHERE "
                        "table_schema = current_schema() AND table_name = ?", (name,)) is not None

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self.conn.transaction():
            if self._lock is not None:
                self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock,))
            yield

    def lock_session(self, name: str) -> None:
        """Take session-level advisory lock ``name`` (of this schema) on this connection,
        polled with back-off, never a blocking ``pg_advisory_lock()``: a blocked statement
        holds a snapshot, and the checkpointer's CREATE INDEX CONCURRENTLY waits for every
        such snapshot, so a waiter would deadlock with a migrating holder. The lock dies with
        the session if the process does."""
        key = lock_key(self.schema, name)
        delay = 0.005
        while not self.conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)
                                    ).fetchone()["ok"]:  # type: ignore[index]
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def unlock_session(self, name: str) -> None:
        if not self.conn.closed:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(self.schema, name),))

    @contextlib.contextmanager
    def session_lock(self, name: str) -> Iterator[None]:
        """``lock_session`` .. ``unlock_session`` around a block."""
        self.lock_session(name)
        try:
            yield
        finally:
            self.unlock_session(name)

    def close(self) -> None:
        self.conn.close()


def open_profiles(location: str, *, create: bool = True) -> SyncDb:
    """A connection to the importer's profiles database at ``location``
    (``DatabaseUrl.profiles_location``): a SQLite file or ``file:`` URI, or a PostgreSQL URL,
    whose write lock is the schema's ``profiles-write`` advisory lock. ``create=False``
    raises FileNotFoundError instead of creating a missing database. Not yet migrated."""
    if location.startswith(REDIS_PREFIXES):
        raise ValueError(f"the profile importer needs SQL tables, which a Redis state database "
                         f"({redact(location)}) does not have: keep the state on SQLite or "
                         "PostgreSQL to import profiles")
    if not is_postgres(location):
        return SqliteSyncDb.open(location, create=create)
    db = PostgresSyncDb(location, write_lock="profiles-write")
    db.where = f"{db.where} (schema {db.schema})"
    if not create and not db.has_table("import_jobs"):
        db.close()
        raise FileNotFoundError(f"no profiles database at {db.where}")
    return db
