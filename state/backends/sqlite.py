"""SQLite backend: checkpoints, inbox, quarantine and local traces in one WAL file; file
locks for folds, leadership and agent steps.

Inbox appends (one transaction per group commit) run on their own connection in one
long-lived thread, a small one at once on the event loop's thread (``_Appender``); the other
inbox writes run on a write connection in a worker thread, which the trace store and the alert
outbox share (``traces()``, ``outbox()``); checkpoints go through ``CasSqliteSaver``
(``AsyncSqliteSaver`` with compare-and-swap on the shared state's thread) on an ``aiosqlite``
connection. Tables come from ``state.backends.migrations.STATE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import CheckpointTuple, get_checkpoint_metadata
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from state.backends.aiodb import AiosqliteSql, SqliteAsyncDb
from state.backends.base import INBOX_HEADS, Backend, InboxWrite
from state.backends.history import (
    DELTA_METADATA_KEYS,
    LinearThreads,
    check_strategy,
    prune_plan,
    refuse_delta,
)
from state.backends.lease import SqliteLeases, poll
from state.backends.migrations import STATE, SchemaNotReady, migrate, require_current
from state.backends.outbox import OutboxStore, SqlOutboxStore
from state.backends.syncdb import BUSY_TIMEOUT_S, SqliteSyncDb, sqlite_connect
from state.backends.traces import SqliteTraceStore
from state.backends.tree import ROW_PREFIX, EntriesMissing, EntryStore, TreeSerde, Unloaded, diff
from state.backends.url import sqlite_path
from state.fold import InboxRow, Quarantined

BUSY_TIMEOUT_MS = int(BUSY_TIMEOUT_S * 1000)
# A stream's committed sequence: its newest row still in the inbox, else the mark up to which
# ``delete_folded`` deleted its rows (kept in ``bga_streams.last_seq`` in the same
# transaction), so an append writes its rows only. (Databases written before this recorded
# ``last_seq`` with every append too: the same answer.)
COMMITTED_SEQ = ("SELECT max(last_seq, coalesce((SELECT max(seq) FROM bga_inbox "
                 "WHERE stream_id=?), 0)) FROM bga_streams WHERE stream_id=?")
log = logging.getLogger(__name__)

INLINE_MAX_ROWS = 64  # an append this small may commit on the event loop's own thread
INLINE_CHECKPOINT_EVERY = 1000  # inline commits (~a WAL page each) between passive checkpoints
WAL_RESTART_FRAMES = 4000  # a WAL this long at a checkpoint: the next append restarts it
path_from_url = sqlite_path  # the file of a sqlite:/// URL (one URL parser: state.backends.url)


class CasSqliteSaver(LinearThreads, AsyncSqliteSaver):
    """AsyncSqliteSaver with compare-and-swap on the linear threads (``state.backends.history``)
    and the optional methods ``langgraph dev`` uses: adelete_for_runs, acopy_thread, aprune.

    On a linear thread the check and the insert share one write transaction: a writer working
    from a checkpoint that is not the newest fails with ForkRefused instead of forking it.
    Its root checkpoints store their channel values as versioned entries
    (``state.backends.tree``, in the same transaction), so a checkpoint writes only what
    changed since its parent; rows of the old layout (the whole checkpoint) still load.
    Every other thread is written exactly as AsyncSqliteSaver writes it.
    """

    serde: TreeSerde

    def __init__(self, conn: aiosqlite.Connection, *, serde: Any = None,
                 tree: bool = True) -> None:
        super().__init__(conn, serde=serde)
        self.serde = TreeSerde(self.serde)
        self.entries = EntryStore(self.serde.inner)
        self.tree = tree  # False: linear threads too store whole checkpoints (benchmarks)

    async def aput(self, config, checkpoint, metadata, new_versions):
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        if conf.get("checkpoint_ns", "") or not self.is_linear(thread_id):
            return await super().aput(config, checkpoint, metadata, new_versions)
        parent = conf.get("checkpoint_id")
        meta = json.dumps(get_checkpoint_metadata(config, metadata),
                          ensure_ascii=False).encode("utf-8", "ignore")
        root = None
        async with self._transaction():
            cur = await self.conn.execute(
                "SELECT max(checkpoint_id) FROM checkpoints "
                "WHERE thread_id=? AND checkpoint_ns=''", (thread_id,))
            self.check_parent(thread_id, (await cur.fetchone())[0], parent)
            if self.tree:  # only what changed since the parent (state.backends.tree)
                sql = AiosqliteSql(self.conn)
                base = await self.entries.open_tree(sql, thread_id, parent)
                root, changes = diff(self.entries.serde, checkpoint["channel_values"], base,
                                     checkpoint["id"])
                await self.entries.write(sql, thread_id, changes)
                type_, blob = self.serde.dump_row(checkpoint)
            else:
                type_, blob = self.serde.dumps_typed(checkpoint)
            await self.conn.execute(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id,"
                " parent_checkpoint_id, type, checkpoint, metadata) "
                "VALUES (?, '', ?, ?, ?, ?, ?)",
                (thread_id, checkpoint["id"], parent, type_, blob, meta))
        if root is not None:
            self.entries.remember(thread_id, checkpoint["id"], root)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "",
                                 "checkpoint_id": checkpoint["id"]}}

    async def _values(self, tup: CheckpointTuple | None, *, locked: bool
                      ) -> CheckpointTuple | None:
        """``tup`` with its channel values loaded, if its row stores them as entries."""
        if tup is None or not isinstance(tup.checkpoint.get("channel_values"), Unloaded):
            return tup  # (a serde stand-in that skips values returns none: nothing to load)
        conf = tup.config["configurable"]
        thread_id, checkpoint_id = str(conf["thread_id"]), str(conf["checkpoint_id"])
        if locked:  # inside alist: the saver's lock is held already
            root = await self.entries.load(AiosqliteSql(self.conn), thread_id, checkpoint_id)
        else:
            async with self.lock:
                root = await self.entries.load(AiosqliteSql(self.conn), thread_id,
                                               checkpoint_id)
        tup.checkpoint["channel_values"] = dict(root.obj)  # shared values: never mutated
        return tup

    async def aget_tuple(self, config):
        try:
            return await self._values(await super().aget_tuple(config), locked=False)
        except EntriesMissing:  # pruned between the row and its entries: read it again
            return await self._values(await super().aget_tuple(config), locked=False)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        async for tup in super().alist(config, filter=filter, before=before, limit=limit):
            yield await self._values(tup, locked=True)

    async def adelete_thread(self, thread_id: str) -> None:
        await super().adelete_thread(thread_id)
        async with self._transaction():
            await EntryStore.delete_threads(AiosqliteSql(self.conn), [str(thread_id)])
        self.entries.forget([thread_id])

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """One write transaction on the saver's connection (BEGIN IMMEDIATE: it waits for,
        and then excludes, every other writer of the file)."""
        await self.setup()
        async with self.lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                await self.conn.commit()
            except BaseException:
                await self.conn.rollback()
                raise

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that runs ``run_ids`` made, on every
        thread but a linear one (``langgraph dev`` calls this to roll a cancelled run back)."""
        run_ids = [str(r) for r in run_ids]
        if not run_ids:
            return
        async with self._transaction():
            cur = await self.conn.execute(
                "SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints WHERE "
                "json_extract(CAST(metadata AS TEXT), '$.run_id') IN "
                f"({','.join('?' * len(run_ids))})", run_ids)
            doomed = self.spare_linear(await cur.fetchall())
            for table in ("writes", "checkpoints"):
                await self.conn.executemany(
                    f"DELETE FROM {table} WHERE thread_id=? AND checkpoint_ns=? "
                    "AND checkpoint_id=?", doomed)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread, in all namespaces, to another thread
        (metadata ``thread_id`` renamed); a linear thread cannot be the target."""
        source, target = str(source_thread_id), str(target_thread_id)
        self.refuse_copy_into(target)
        async with self._transaction():
            await self.conn.execute(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata) SELECT ?, checkpoint_ns, "
                "checkpoint_id, parent_checkpoint_id, type, checkpoint, CASE WHEN "
                "json_extract(CAST(metadata AS TEXT), '$.thread_id') IS NULL THEN metadata "
                "ELSE CAST(json_set(CAST(metadata AS TEXT), '$.thread_id', ?) AS BLOB) END "
                "FROM checkpoints WHERE thread_id=?", (target, target, source))
            await self.conn.execute(
                "INSERT OR REPLACE INTO writes (thread_id, checkpoint_ns, checkpoint_id, "
                "task_id, task_path, idx, channel, type, value) SELECT ?, checkpoint_ns, "
                "checkpoint_id, task_id, task_path, idx, channel, type, value FROM writes "
                "WHERE thread_id=?", (target, source))
            await EntryStore.copy_thread(AiosqliteSql(self.conn), source, target)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep the newest checkpoint of every namespace (a subgraph call
        goes with the root checkpoint it started from); ``delete``: delete the threads."""
        thread_ids = check_strategy(thread_ids, strategy)
        if not thread_ids:
            return
        if strategy == "delete":
            async with self._transaction():
                for table in ("checkpoints", "writes"):
                    await self.conn.executemany(f"DELETE FROM {table} WHERE thread_id=?",
                                                [(t,) for t in thread_ids])
                await EntryStore.delete_threads(AiosqliteSql(self.conn), thread_ids)
            self.entries.forget(thread_ids)
            return
        await self._refuse_delta(thread_ids)
        for thread_id in thread_ids:
            await self._prune(thread_id, 1, history=False)

    async def aprune_history(self, thread_id: str, keep: int) -> int:
        """The retention prune (see ``prune_plan``); returns how many checkpoints went."""
        await self._refuse_delta([thread_id])
        return await self._prune(str(thread_id), keep, history=True)

    async def _refuse_delta(self, thread_ids: Sequence[str]) -> None:
        await self.setup()
        async with self.lock:
            cur = await self.conn.execute(
                "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id IN "
                f"({','.join('?' * len(thread_ids))}) AND ("
                + " OR ".join(f"json_extract(CAST(metadata AS TEXT), '$.{k}') IS NOT NULL"
                              for k in DELTA_METADATA_KEYS) + ")", list(thread_ids))
            refuse_delta(t for (t,) in await cur.fetchall())

    async def _prune(self, thread_id: str, keep: int, *, history: bool) -> int:
        async with self._transaction():
            cur = await self.conn.execute(
                "SELECT checkpoint_ns, checkpoint_id, "
                "json_extract(CAST(metadata AS TEXT), '$.parents.\"\"') "
                "FROM checkpoints WHERE thread_id=?", (thread_id,))
            doomed, cutoff = prune_plan(await cur.fetchall(), keep, history=history)
            keys = [(thread_id, ns, i) for ns, i in doomed]
            for table in ("writes", "checkpoints"):
                await self.conn.executemany(
                    f"DELETE FROM {table} WHERE thread_id=? AND checkpoint_ns=? "
                    "AND checkpoint_id=?", keys)
            await self.conn.executemany(  # a kept checkpoint's parent may be gone now
                "UPDATE checkpoints SET parent_checkpoint_id=NULL WHERE thread_id=? "
                "AND checkpoint_ns=? AND parent_checkpoint_id=?", keys)
            if history and cutoff is not None:  # writes whose checkpoint was never saved
                await self.conn.execute(
                    "DELETE FROM writes WHERE thread_id=? AND checkpoint_id<? AND NOT EXISTS "
                    "(SELECT 1 FROM checkpoints c WHERE c.thread_id=writes.thread_id AND "
                    "c.checkpoint_ns=writes.checkpoint_ns AND "
                    "c.checkpoint_id=writes.checkpoint_id)", (thread_id, cutoff))
            if keys:  # the entries no kept checkpoint uses (state.backends.tree)
                cur = await self.conn.execute(
                    "SELECT 1 FROM checkpoints WHERE thread_id=? AND checkpoint_ns='' AND "
                    "type LIKE ? LIMIT 1", (thread_id, ROW_PREFIX + "%"))
                left = await cur.fetchone() is not None
                await EntryStore.collect(AiosqliteSql(self.conn), thread_id, cutoff, left)
        return len(keys)


class SqliteBackend(Backend):
    append_now_rows = INLINE_MAX_ROWS

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._write: sqlite3.Connection | None = None
        self._read: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._aconn: aiosqlite.Connection | None = None
        self._leases_db: SqliteLeases | None = None
        self._lease_lock = asyncio.Lock()
        self._traces: SqliteTraceStore | None = None
        self._outbox: OutboxStore | None = None
        self._appender: _Appender | None = None
        self.checkpointer: CasSqliteSaver

    async def setup(self, *, create: bool = True, read_only: bool = False) -> None:
        if (not create or read_only) and not await asyncio.to_thread(self.path.exists):
            raise SchemaNotReady(f"no state database at {self.path} ({STATE.missing_hint})")
        if not read_only:
            await asyncio.to_thread(self.path.parent.mkdir, parents=True, exist_ok=True)
        self._write = await asyncio.to_thread(sqlite_connect, self.path)
        db = SqliteSyncDb(self._write, str(self.path))
        if read_only:  # no migration, no write transaction: a check that writes nothing
            await asyncio.to_thread(functools.partial(
                require_current, db, STATE, str(self.path), also=("checkpoints", "writes")))
        else:
            await asyncio.to_thread(migrate, db, STATE)
        self._read = await asyncio.to_thread(sqlite_connect, self.path)
        self._aconn = await aiosqlite.connect(self.path, timeout=BUSY_TIMEOUT_S)
        await self._aconn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await self._aconn.execute("PRAGMA synchronous=NORMAL")
        self.checkpointer = CasSqliteSaver(self._aconn)
        if read_only:
            self.checkpointer.is_setup = True  # its setup() writes (WAL pragma, CREATE TABLE)
        else:
            await self.checkpointer.setup()

    def share_trees(self, trees: dict[str, Any]) -> None:
        self.checkpointer.entries.latest = trees

    def traces(self) -> SqliteTraceStore:
        """The trace store on this backend's write connection (used after ``setup()``)."""
        if self._traces is None:
            if self._write is None:
                raise RuntimeError("SQLite backend used before setup()")
            self._traces = SqliteTraceStore(self.url, shared=(self._write, self._write_lock))
        return self._traces

    def outbox(self) -> OutboxStore:
        """The alert outbox on this backend's write connection (used after ``setup()``)."""
        if self._outbox is None:
            if self._write is None:
                raise RuntimeError("SQLite backend used before setup()")
            self._outbox = SqlOutboxStore(SqliteAsyncDb(self._write, self._write_lock))
        return self._outbox

    # -- inbox ----------------------------------------------------------------------------
    async def _on_write(self, fn, *args):
        async with self._write_lock:
            return await asyncio.to_thread(fn, self._write, *args)

    async def _on_read(self, fn, *args):
        async with self._read_lock:
            return await asyncio.to_thread(fn, self._read, *args)

    async def open_stream(self, producer: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO bga_streams (producer, host, pid, opened_at) VALUES (?, ?, ?, ?)",
                (producer, socket.gethostname(), os.getpid(), time.time()))
            assert cur.lastrowid is not None  # an INSERT sets it
            return cur.lastrowid

        return await self._on_write(run)

    async def close_stream(self, stream: int) -> None:
        await self._on_write(lambda c: c.execute(
            "UPDATE bga_streams SET closed_at=? WHERE stream_id=?", (time.time(), stream)))

    async def append(self, stream: int, rows: Sequence[InboxWrite]) -> None:
        if not rows:
            return
        await self._inbox_appender().append(stream, rows)

    def append_now(self, stream: int, rows: Sequence[InboxWrite]) -> bool:
        return self._inbox_appender().append_now(stream, rows)

    def _inbox_appender(self) -> _Appender:
        if self._appender is None:
            if self._write is None:
                raise RuntimeError("SQLite backend used before setup()")
            self._appender = _Appender(self.path)
        return self._appender

    async def committed_seq(self, stream: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(COMMITTED_SEQ, (stream, stream)).fetchone()
            return int(row[0]) if row else 0

        return await self._on_read(run)

    async def read_inbox(self, limit: int, after: tuple[int, int] = (0, 0)) -> list[InboxRow]:
        def run(conn: sqlite3.Connection) -> list[InboxRow]:
            cur = conn.execute("SELECT stream_id, seq, kind, payload FROM bga_inbox "
                               "WHERE (stream_id, seq) > (?, ?) "
                               "ORDER BY stream_id, seq LIMIT ?", (*after, limit))
            return [InboxRow(s, q, k, p) for s, q, k, p in cur]

        return await self._on_read(run)

    async def inbox_heads(self) -> dict[int, int]:
        return await self._on_read(lambda c: dict(c.execute(INBOX_HEADS).fetchall()))

    async def delete_folded(self, marks: dict[int, int]) -> None:
        if not marks:
            return

        def run(conn: sqlite3.Connection) -> None:
            with SqliteSyncDb(conn, str(self.path)).write():  # the marks with the deletes
                conn.executemany(
                    "UPDATE bga_streams SET last_seq=max(last_seq, ?) WHERE stream_id=?",
                    [(seq, stream) for stream, seq in marks.items()])
                conn.executemany("DELETE FROM bga_inbox WHERE stream_id=? AND seq<=?",
                                 list(marks.items()))

        await self._on_write(run)

    async def pending_count(self) -> int:
        return await self._on_read(
            lambda c: c.execute("SELECT count(*) FROM bga_inbox").fetchone()[0])

    async def quarantine(self, items: Sequence[Quarantined], at: float) -> None:
        if items:
            rows = [(q.row.stream, q.row.seq, q.row.kind, q.row.payload, q.reason, at)
                    for q in items]
            await self._on_write(lambda c: c.executemany(
                "INSERT INTO bga_quarantine (stream_id, seq, kind, payload, reason, at) "
                "VALUES (?, ?, ?, ?, ?, ?)", rows))

    async def quarantined(self, limit: int = 100) -> list[dict]:
        def run(conn: sqlite3.Connection) -> list[dict]:
            cur = conn.execute("SELECT stream_id, seq, kind, reason, at FROM bga_quarantine "
                               "ORDER BY id DESC LIMIT ?", (limit,))
            return [dict(zip(("stream", "seq", "kind", "reason", "at"), r, strict=True))
                    for r in cur]

        return await self._on_read(run)

    # -- checkpoints ----------------------------------------------------------------------
    async def latest_checkpoint_id(self, thread_id: str) -> str | None:
        row = await self._on_read(lambda c: c.execute(
            "SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id=? AND checkpoint_ns=''",
            (thread_id,)).fetchone())
        return row[0] if row else None

    async def prune_checkpoints(self, thread_id: str, keep: int) -> int:
        n = await self.checkpointer.aprune_history(thread_id, keep)
        if n:
            await self._on_write(lambda c: c.execute("PRAGMA incremental_vacuum"))
        return n

    async def is_empty(self) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            has_cp = conn.execute("SELECT 1 FROM checkpoints LIMIT 1").fetchone()
            has_rows = conn.execute("SELECT 1 FROM bga_inbox LIMIT 1").fetchone()
            return has_cp is None and has_rows is None

        return await self._on_read(run)

    # -- locks: leases (state/backends/lease.py) ------------------------------------------
    def _lease_rows(self) -> SqliteLeases:
        if self._leases_db is None:
            self._leases_db = SqliteLeases(self.path, self.failover_s)
        return self._leases_db

    async def _on_leases(self, fn, *args):
        async with self._lease_lock:  # one call at a time on the lease connection
            return await asyncio.to_thread(fn, *args)

    async def _acquire(self, name: str, wait: float | None) -> bool:
        rows = self._lease_rows()

        async def attempt() -> bool:
            taking = asyncio.ensure_future(self._on_leases(rows.take, name))
            try:
                return await asyncio.shield(taking)
            except asyncio.CancelledError:  # the thread goes on: give back what it took
                if await taking:
                    await self._on_leases(rows.release, name)
                raise

        return await poll(attempt, wait)

    async def _renew(self, name: str) -> bool:
        return await self._on_leases(self._lease_rows().renew, name)

    async def _release(self, name: str) -> None:
        if self._leases_db is not None:
            await self._on_leases(self._leases_db.release, name)

    async def aclose(self) -> None:
        await self.drop_leases()
        if self._leases_db is not None:
            await self._on_leases(self._leases_db.close)
            self._leases_db = None
        if self._aconn is not None:
            await self._aconn.close()
            self._aconn = None
        self._traces = self._outbox = None  # they used the write connection
        if self._appender is not None:
            await self._appender.aclose()
            self._appender = None
        for conn in (self._write, self._read):
            if conn is not None:
                conn.close()
        self._write = self._read = None


class _Appender:
    """The inbox's writer: appends commit in the order they came, one at a time.

    A small append (at most ``INLINE_MAX_ROWS`` rows) with nothing else in flight commits at
    once on the calling (event loop) thread, on a connection that never waits for a lock
    (``busy_timeout`` 0, ~8 us for a one-row commit in WAL with ``synchronous=NORMAL``): one
    await at a time then costs no thread hand-off. If the file is locked (a checkpoint, a
    fold, another process's append) it does not wait there: the append goes to the thread,
    whose connection waits for the lock as every other write of the file does. Bigger group
    commits go to the thread too, so the loop is never held for long. The inline connection
    never checkpoints the WAL (``wal_autocheckpoint`` 0: a checkpoint copies the WAL into the
    file and fsyncs); after every ``INLINE_CHECKPOINT_EVERY`` inline commits the thread is
    asked for a passive checkpoint, which the loop does not wait for (it copies what is
    committed while later appends go on). The WAL starts again from its beginning only at a
    write that finds all of it copied, which a checkpoint racing a writer that never pauses
    does not achieve: if one finds the WAL over ``WAL_RESTART_FRAMES`` long, the next append
    goes to the thread, which checkpoints after committing it while no inline commit races
    it, so the WAL stays bounded however long one await at a time goes on. A call to the
    thread costs one hand-off to it and one wake-up of the event loop, no executor, lock or
    context copy per batch."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="bga-inbox-append", daemon=True)
        self._thread.start()
        self._in_thread = 0  # appends handed to the thread and not settled yet
        self._inline: sqlite3.Connection | None = None
        self._since_checkpoint = 0  # inline commits since the thread was last asked to checkpoint
        self.inline_commits = 0  # how many appends committed on the loop's thread
        self.checkpoints = 0  # passive checkpoints the thread ran for the inline commits
        self.checkpoints_failed = 0  # and those that failed
        self._checkpoint_failed = False  # the last one failed (logged once until one works)
        self._restart = False  # set by the thread: the next append goes there to restart the WAL
        self.restarts = 0  # checkpoints after such an append (none racing it)

    def append(self, stream: int, rows: Sequence[InboxWrite]) -> asyncio.Future[None]:
        """``rows`` committed in one transaction; the future is done once the transaction
        is (a cancelled caller does not undo it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if self.append_now(stream, rows):
            future.set_result(None)
            return future
        self._in_thread += 1
        self._jobs.put((stream, rows, loop, future))
        return future

    def append_now(self, stream: int, rows: Sequence[InboxWrite]) -> bool:
        """Commit a small append here and now if nothing is in flight on the thread; False
        (nothing written) if it is too big, its turn is the thread's, or the file is locked."""
        if len(rows) > INLINE_MAX_ROWS or self._in_thread or self._restart:
            return False
        if self._inline is None:
            self._inline = sqlite_connect(self._path, busy_timeout_s=0)
            self._inline.execute("PRAGMA wal_autocheckpoint=0")
        try:
            _commit(self._inline, stream, rows)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                return False  # rolled back: the thread's connection waits for the lock
            raise
        self.inline_commits += 1
        self._since_checkpoint += 1
        if self._since_checkpoint >= INLINE_CHECKPOINT_EVERY:
            self._since_checkpoint = 0
            self._jobs.put(_CHECKPOINT)
        return True

    def _settle(self, future: asyncio.Future[None], error: BaseException | None) -> None:
        """On the loop, once the thread finished a job (whether or not anybody still waits)."""
        self._in_thread -= 1
        self._since_checkpoint = 0  # the thread's commit checkpointed if the WAL was big
        if future.done():  # the caller was cancelled; the commit stands (committed_seq says so)
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    async def aclose(self) -> None:
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while (job := self._jobs.get()) is not None:
            if isinstance(job, str):  # _CHECKPOINT
                conn = self._checkpoint(conn)
                continue
            stream, rows, loop, future = job
            error: BaseException | None = None
            try:
                if conn is None:
                    conn = sqlite_connect(self._path)
                _commit(conn, stream, rows)
            except BaseException as exc:  # handed to the caller, as to_thread would
                error = exc
            if self._restart:  # no inline commit races this one (one is in the thread)
                self._restart = False
                self.restarts += 1
                conn = self._checkpoint(conn)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._settle, future, error)
        if conn is not None:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """A passive checkpoint for the inline commits (in the thread, nobody waits for it):
        it copies what is committed without blocking a writer or a reader. If it fails (a
        full disk, an unreadable file) the WAL only grows until the next one works; the
        appends themselves report their own errors. One log line until one works again."""
        try:
            if conn is None:
                conn = sqlite_connect(self._path)
            frames = _passive_checkpoint(conn)
        except sqlite3.Error as exc:
            if not self._checkpoint_failed:
                log.warning("WAL checkpoint of %s failed (%s); appends go on, the WAL grows "
                            "until one works", self._path, exc)
            self._checkpoint_failed = True
            self.checkpoints_failed += 1
            return conn
        if self._checkpoint_failed:
            log.info("WAL checkpoint of %s works again", self._path)
        self._checkpoint_failed = False
        self.checkpoints += 1
        if frames > WAL_RESTART_FRAMES:  # it was not started again since the last one
            self._restart = True
        return conn


def _passive_checkpoint(conn: sqlite3.Connection) -> int:
    """Copy what the WAL holds into the file as far as no reader needs it; its length in frames
    (it starts again from the beginning at the first write after one copied all of it)."""
    _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


_Job = tuple[int, Sequence[InboxWrite], asyncio.AbstractEventLoop, asyncio.Future[None]] | str
_CHECKPOINT = "checkpoint"  # the job that asks the thread for a passive WAL checkpoint


def _commit(conn: sqlite3.Connection, stream: int, rows: Sequence[InboxWrite]) -> None:
    # the stream id is our own integer, spelled into the statement (one cached statement per
    # stream) so that the rows bind as they are, no tuple made per row
    insert = f"INSERT INTO bga_inbox VALUES ({int(stream)}, ?, ?, ?)"
    if len(rows) == 1:  # autocommit: the statement is its own transaction (rolled back on error)
        conn.execute(insert, rows[0])
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(insert, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # disk full: SQLite has already rolled it back
            conn.execute("ROLLBACK")
        raise
