"""PostgreSQL backend (``postgresql://...`` or ``postgres://...``).

Checkpoints go through LangGraph's ``AsyncPostgresSaver`` on a psycopg ``AsyncConnectionPool``,
subclassed to add compare-and-swap on the shared state's thread (as ``CasSqliteSaver`` does); the
inbox, its streams, the quarantine, the local traces and the alert outbox are plain tables
(``state.backends.migrations.STATE``; the trace store and the outbox share the pool); the fold
and leader locks are session-level advisory locks, each held on a dedicated connection, so the
server releases the lock of a process that dies.

Everything is scoped to the connection's ``current_schema()``: several state databases can
live in one PostgreSQL database as separate schemas (``?options=-csearch_path%3Dname``), and
their lock keys are derived from the schema name too.

Commit-order trap: with concurrent producers, sequence order is not commit order, so a reader
that skips past a key it has already seen could miss a row that commits late. Here every stream
(one per SharedState instance) has exactly one writer that commits its batches one after the
other in sequence order, and the fold keeps one watermark *per stream*. A row that is not yet
committed when a fold runs is simply not seen; every row of that stream with a lower sequence
number committed before it, and none with a higher one can commit first, so the next fold finds
it above its stream's watermark: it is folded exactly once, never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, TypedDict, cast

import psycopg
from langgraph.checkpoint.base import CheckpointTuple, get_serializable_checkpoint_metadata
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.postgres.base import PRUNE_DELTA_THREADS_SQL
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncConnection
from psycopg.rows import AsyncRowFactory, DictRow, dict_row, tuple_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from state.backends.aiodb import PostgresAsyncDb, PostgresSql
from state.backends.base import INBOX_HEADS, Backend, InboxWrite
from state.backends.history import LinearThreads, prune_plan, refuse_delta
from state.backends.lease import lease_s, lock_session_sql, poll, pool_session_sql
from state.backends.migrations import (
    STATE,
    SchemaNotReady,
    migrate,
    require_current,
    require_saver_migrations,
)
from state.backends.outbox import OutboxStore, SqlOutboxStore
from state.backends.syncdb import CONNECT_TIMEOUT_S, PostgresSyncDb, lock_key
from state.backends.traces import PostgresTraceStore
from state.backends.tree import TREE_KEY, EntriesMissing, EntryStore, diff
from state.backends.url import parse_url
from state.fold import InboxRow, Quarantined
from state.redact import redact

LOCK_TIMEOUT_S = 5  # a lookup of a commit's outcome waits this long for its row lock
POOL_MAX = 4
SPARE_LOCK_CONNS = 4  # idle lock sessions kept for reuse (a tick locks each agent step)
LOCK_SPACE = 0x42474101  # first key of the two-int advisory locks (threads, migrations)


class _ConnKwargs(TypedDict):
    autocommit: bool
    prepare_threshold: int
    row_factory: AsyncRowFactory[DictRow]


_CONN_KWARGS: _ConnKwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}

APPEND_ONE_STATEMENT = 256
"""An append of up to this many rows is one statement on an autocommit connection (one round
trip instead of BEGIN, COPY, UPDATE, COMMIT); a bigger one streams its rows with COPY. Both
insert the rows and set the stream's ``last_seq`` (its row lock held until COMMIT, which
``committed_seq`` waits for) in one transaction."""
_APPEND_SQL = (
    "WITH ins AS (INSERT INTO bga_inbox (stream_id, seq, kind, payload) "
    "SELECT %s, s, k, p FROM unnest(%s::bigint[], %s::text[], %s::bytea[]) AS t(s, k, p)) "
    "UPDATE bga_streams SET last_seq=%s WHERE stream_id=%s")

# the lock a CAS write and a prune of one thread take (xact-scoped, two-int key space)
_THREAD_LOCK_SQL = ("SELECT pg_advisory_xact_lock(%s, hashtext(coalesce(current_schema(), '') "
                    "|| ':thread:' || %s))")


def keepalives(failover_s: float) -> dict[str, int]:
    """libpq TCP settings under which the server drops a lock session within ~5/6 of
    ``failover_s`` after the holder's host stops answering (idle + interval x count), and the
    holder's own writes give up as soon (``tcp_user_timeout``)."""
    return {"keepalives": 1, "keepalives_idle": max(1, int(failover_s / 3)),
            "keepalives_interval": max(1, int(failover_s / 6)), "keepalives_count": 3,
            "tcp_user_timeout": int(failover_s * 1000 * 2 / 3)}


def server_keepalives_sql(failover_s: float) -> list[str]:
    """The same bounds on the server's side of a lock session: the server's own keepalives
    (its default waits 2 h before the first probe, so a vanished host kept its locks), and
    the lease settings (``lease.lock_session_sql``): a session that stops renewing is ended."""
    k = keepalives(failover_s)
    return [f"SET tcp_keepalives_idle = {k['keepalives_idle']}",
            f"SET tcp_keepalives_interval = {k['keepalives_interval']}",
            f"SET tcp_keepalives_count = {k['keepalives_count']}",
            *lock_session_sql(failover_s)]


async def try_session_lock(conn: AsyncConnection[Any], key: int, wait: float | None) -> bool:
    """Take session-level advisory lock ``key`` on ``conn``, polling with back-off (``wait``
    None: until taken; 0: once). Polled, never a blocking ``pg_advisory_lock()``: a blocked
    statement holds a snapshot, and the saver's CREATE INDEX CONCURRENTLY waits for every
    such snapshot, so a waiter would deadlock with a migrating holder."""
    async def attempt() -> bool:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            return bool((await cur.fetchone() or (False,))[0])

    return await poll(attempt, wait)


class CasPostgresSaver(LinearThreads, AsyncPostgresSaver):
    """AsyncPostgresSaver with compare-and-swap on the linear threads
    (``state.backends.history``) and the optional methods ``langgraph dev`` uses:
    adelete_for_runs and acopy_thread (``aprune`` is LangGraph's own).

    A linear thread's root-namespace write takes a per-thread transaction-scoped advisory
    lock, checks that the thread's newest checkpoint is the writer's parent and writes its
    channel values as versioned entries (``state.backends.tree``: only what changed since the
    parent) and the checkpoint in the same transaction; a writer working from a checkpoint
    that is not the newest gets ForkRefused. Rows of the old layout (channel blobs) still
    load. Every other thread is written exactly as AsyncPostgresSaver writes it.
    """

    def __init__(self, conn: Any, *, serde: Any = None, tree: bool = True) -> None:
        super().__init__(conn, serde=serde)
        self.entries = EntryStore(self.serde)
        self.tree = tree  # False: linear threads store channel blobs as LangGraph's saver does

    async def aput(self, config, checkpoint, metadata, new_versions):
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        if conf.get("checkpoint_ns", "") or not self.is_linear(thread_id):
            return await super().aput(config, checkpoint, metadata, new_versions)
        if self.tree:
            return await self._aput_entries(config, checkpoint, metadata)
        parent = conf.get("checkpoint_id")
        copy = checkpoint.copy()
        copy["channel_values"] = copy["channel_values"].copy()
        blob_values = {}
        for k, v in checkpoint["channel_values"].items():  # as AsyncPostgresSaver.aput
            if isinstance(v, _DeltaSnapshot):
                blob_values[k] = copy["channel_values"].pop(k)
                copy["channel_values"][k] = True
            elif v is None or isinstance(v, (str, int, float, bool)):
                pass
            else:
                blob_values[k] = copy["channel_values"].pop(k)
        blob_versions = {k: v for k, v in new_versions.items() if k in blob_values}
        blobs = (await asyncio.to_thread(self._dump_blobs, thread_id, "", blob_values,
                                         blob_versions)) if blob_versions else []
        meta = Jsonb(get_serializable_checkpoint_metadata(config, metadata))
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute(_THREAD_LOCK_SQL, (LOCK_SPACE, thread_id))
            await cur.execute("SELECT max(checkpoint_id) AS latest FROM checkpoints "
                              "WHERE thread_id=%s AND checkpoint_ns=''", (thread_id,))
            self.check_parent(thread_id, (await cur.fetchone())["latest"], parent)
            if blobs:
                await cur.executemany(self.UPSERT_CHECKPOINT_BLOBS_SQL, blobs)
            await cur.execute(self.UPSERT_CHECKPOINTS_SQL,
                              (thread_id, "", checkpoint["id"], parent, Jsonb(copy), meta))
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "",
                                 "checkpoint_id": checkpoint["id"]}}

    async def _aput_entries(self, config, checkpoint, metadata):
        """A linear thread's root checkpoint as versioned entries (``state.backends.tree``):
        the row holds the checkpoint with ``channel_values`` = ``{TREE_KEY: 1}``."""
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        parent = conf.get("checkpoint_id")
        meta = Jsonb(get_serializable_checkpoint_metadata(config, metadata))
        row = {**checkpoint, "channel_values": {TREE_KEY: 1}}
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute(_THREAD_LOCK_SQL, (LOCK_SPACE, thread_id))
            await cur.execute("SELECT max(checkpoint_id) AS latest FROM checkpoints "
                              "WHERE thread_id=%s AND checkpoint_ns=''", (thread_id,))
            self.check_parent(thread_id, (await cur.fetchone())["latest"], parent)
            async with cur.connection.cursor(row_factory=tuple_row) as tcur:
                sql = PostgresSql(tcur)
                base = await self.entries.open_tree(sql, thread_id, parent)
                root, changes = diff(self.serde, checkpoint["channel_values"], base,
                                     checkpoint["id"])
                await self.entries.write(sql, thread_id, changes)
            await cur.execute(self.UPSERT_CHECKPOINTS_SQL,
                              (thread_id, "", checkpoint["id"], parent, Jsonb(row), meta))
        self.entries.remember(thread_id, checkpoint["id"], root)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": "",
                                 "checkpoint_id": checkpoint["id"]}}

    async def _load_checkpoint_tuple(self, value: DictRow) -> CheckpointTuple:
        if (value["checkpoint"].get("channel_values") or {}).get(TREE_KEY) != 1:
            return await super()._load_checkpoint_tuple(value)
        thread_id, checkpoint_id = str(value["thread_id"]), str(value["checkpoint_id"])
        pool = cast(AsyncConnectionPool, self.conn)  # not _cursor(): the caller holds its lock
        async with pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            root = await self.entries.load(PostgresSql(cur), thread_id, checkpoint_id)
        value = {**value, "checkpoint": {**value["checkpoint"], "channel_values": {}},
                 "channel_values": None}
        tup = await super()._load_checkpoint_tuple(value)
        tup.checkpoint["channel_values"] = dict(root.obj)  # shared values: never mutated
        return tup

    async def aget_tuple(self, config):
        try:
            return await super().aget_tuple(config)
        except EntriesMissing:  # pruned between the row and its entries: read it again
            return await super().aget_tuple(config)

    async def adelete_thread(self, thread_id: str) -> None:
        await super().adelete_thread(thread_id)
        async with self._cursor() as dcur, dcur.connection.transaction(), \
                dcur.connection.cursor(row_factory=tuple_row) as cur:
            await EntryStore.delete_threads(PostgresSql(cur), [str(thread_id)])
        self.entries.forget([thread_id])

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (their writes, and blobs no other checkpoint uses) that runs
        ``run_ids`` made, on every thread but a linear one (``langgraph dev`` calls this to
        roll a cancelled run back)."""
        run_ids = [str(r) for r in run_ids]
        if not run_ids:
            return
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute("SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints "
                              "WHERE metadata->>'run_id' = ANY(%s)", (run_ids,))
            doomed = self.spare_linear((r["thread_id"], r["checkpoint_ns"], r["checkpoint_id"])
                                       for r in await cur.fetchall())
            await delete_checkpoints(cur, doomed)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of a thread, in all namespaces, to another
        thread (metadata ``thread_id`` renamed); a linear thread cannot be the target."""
        source, target = str(source_thread_id), str(target_thread_id)
        self.refuse_copy_into(target)
        async with self._cursor() as cur, cur.connection.transaction():
            await cur.execute(
                "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata) SELECT %s, checkpoint_ns, "
                "checkpoint_id, parent_checkpoint_id, type, checkpoint, CASE WHEN metadata ? "
                "'thread_id' THEN jsonb_set(metadata, '{thread_id}', to_jsonb(%s::text)) "
                "ELSE metadata END FROM checkpoints WHERE thread_id=%s ON CONFLICT DO NOTHING",
                (target, target, source))
            await cur.execute(
                "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, "
                "type, blob) SELECT %s, checkpoint_ns, channel, version, type, blob FROM "
                "checkpoint_blobs WHERE thread_id=%s ON CONFLICT DO NOTHING", (target, source))
            await cur.execute(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, "
                "task_id, task_path, idx, channel, type, blob) SELECT %s, checkpoint_ns, "
                "checkpoint_id, task_id, task_path, idx, channel, type, blob FROM "
                "checkpoint_writes WHERE thread_id=%s ON CONFLICT DO NOTHING",
                (target, source))
            async with cur.connection.cursor(row_factory=tuple_row) as tcur:
                await EntryStore.copy_thread(PostgresSql(tcur), source, target)


async def delete_checkpoints(cur: psycopg.AsyncCursor[DictRow], keys: Sequence[tuple[str, str, str]]
                             ) -> None:
    """Delete checkpoints by (thread, namespace, id), with their writes and the blobs no
    remaining checkpoint of their namespace uses; null the parent links that pointed at them.
    Runs in the caller's transaction."""
    if not keys:
        return
    doomed = "unnest(%s::text[], %s::text[], %s::text[]) AS d(t, ns, id)"
    params = tuple(list(column) for column in zip(*keys, strict=True))
    await cur.execute(f"DELETE FROM checkpoint_writes w USING {doomed} WHERE "
                      "w.thread_id=d.t AND w.checkpoint_ns=d.ns AND w.checkpoint_id=d.id",
                      params)
    await cur.execute(
        f"WITH gone AS (DELETE FROM checkpoints c USING {doomed} WHERE c.thread_id=d.t "
        "AND c.checkpoint_ns=d.ns AND c.checkpoint_id=d.id RETURNING c.thread_id, "
        "c.checkpoint_ns, c.checkpoint->'channel_versions' AS versions) "
        "SELECT DISTINCT g.thread_id, g.checkpoint_ns, v.key, v.value FROM gone g "
        "CROSS JOIN LATERAL jsonb_each_text(g.versions) AS v", params)
    freed = await cur.fetchall()
    if freed:  # a statement of its own: it must see the checkpoints deleted
        await cur.execute(
            "DELETE FROM checkpoint_blobs b USING unnest(%s::text[], %s::text[], %s::text[], "
            "%s::text[]) AS f(t, ns, channel, version) WHERE b.thread_id=f.t AND "
            "b.checkpoint_ns=f.ns AND b.channel=f.channel AND b.version=f.version AND NOT "
            "EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id=f.t AND c.checkpoint_ns="
            "f.ns AND c.checkpoint->'channel_versions'->>f.channel = f.version)",
            tuple(list(column) for column in zip(*(r.values() for r in freed), strict=True)))
    await cur.execute(f"UPDATE checkpoints c SET parent_checkpoint_id=NULL FROM {doomed} "
                      "WHERE c.thread_id=d.t AND c.checkpoint_ns=d.ns "
                      "AND c.parent_checkpoint_id=d.id", params)


class PostgresBackend(Backend):
    def __init__(self, url: str) -> None:
        if parse_url(url).dialect != "postgres":
            raise ValueError(f"not a PostgreSQL URL: {redact(url)!r}")
        self.url = url
        self.schema = ""
        self._pool: AsyncConnectionPool | None = None
        self._lock_conns: dict[str, AsyncConnection[DictRow]] = {}
        self._spare_lock_conns: list[AsyncConnection[DictRow]] = []
        self._append_conn: AsyncConnection[Any] | None = None  # ``append``'s, kept
        self.checkpointer: CasPostgresSaver

    async def _connect(self, **params: Any) -> AsyncConnection[DictRow]:
        try:
            return await AsyncConnection.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S,
                                                 **_CONN_KWARGS, **params)
        except Exception as exc:
            raise ConnectionError(f"cannot connect to PostgreSQL at {self.where}: "
                                  f"{exc}".strip()) from exc

    async def setup(self, *, create: bool = True, read_only: bool = False) -> None:
        db = await asyncio.to_thread(PostgresSyncDb, self.url)  # migrations run on it
        try:
            self.schema = db.schema
            if read_only:  # migrates nothing, writes nothing
                await asyncio.to_thread(require_current, db, STATE, self.where)
                await asyncio.to_thread(require_saver_migrations, db, "checkpoint_migrations",
                                        len(CasPostgresSaver.MIGRATIONS), self.where)
            elif not create and not await asyncio.to_thread(db.has_table, STATE.table):
                raise SchemaNotReady(f"no state database at {self.where} "
                                     f"({STATE.missing_hint})")
            self._pool = AsyncConnectionPool(self.url, min_size=1, max_size=POOL_MAX,
                                             kwargs={**_CONN_KWARGS,  # a dead link errors
                                                     **keepalives(self.failover_s)},
                                             open=False, configure=self._configure,
                                             timeout=60)
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 3)
            self.checkpointer = CasPostgresSaver(self._pool)
            if not read_only:
                # One migrating process at a time (``PostgresSyncDb.lock_session``: polled,
                # so it never deadlocks with the saver's CREATE INDEX CONCURRENTLY); the
                # saver's own migrations run under the same lock. Dies with its session.
                await asyncio.to_thread(db.lock_session, "migrate")
                try:
                    await asyncio.to_thread(migrate, db, STATE)
                    await self.checkpointer.setup()
                finally:
                    await asyncio.to_thread(db.unlock_session, "migrate")
        except BaseException:
            await self.aclose()
            raise
        finally:
            await asyncio.to_thread(db.close)

    def share_trees(self, trees: dict[str, Any]) -> None:
        self.checkpointer.entries.latest = trees

    @property
    def pool(self) -> AsyncConnectionPool:
        """The connection pool, once ``setup()`` made it."""
        if self._pool is None:
            raise RuntimeError("PostgreSQL backend used before setup()")
        return self._pool

    def traces(self) -> PostgresTraceStore:
        """The trace store on this backend's connection pool (used after ``setup()``)."""
        return PostgresTraceStore(self.url, pool=self.pool)

    def outbox(self) -> OutboxStore:
        """The alert outbox on this backend's connection pool (used after ``setup()``)."""
        return SqlOutboxStore(PostgresAsyncDb(self.pool))

    async def _configure(self, conn: AsyncConnection) -> None:
        for statement in pool_session_sql(self.failover_s):
            await conn.execute(statement)

    def _conn(self):
        return self.pool.connection()

    async def _fetch(self, sql: str, params=()) -> list[dict]:
        async with self._conn() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    # -- inbox ----------------------------------------------------------------------------
    async def open_stream(self, producer: str) -> int:
        rows = await self._fetch(
            "INSERT INTO bga_streams (producer, host, pid, opened_at) VALUES (%s, %s, %s, %s) "
            "RETURNING stream_id", (producer, socket.gethostname(), os.getpid(), time.time()))
        return int(rows[0]["stream_id"])

    async def close_stream(self, stream: int) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE bga_streams SET closed_at=%s WHERE stream_id=%s",
                               (time.time(), stream))

    async def append(self, stream: int, rows: Sequence[InboxWrite]) -> None:
        """On a connection of the pool kept for the appends (one writer per handle, one append
        at a time): checking one out and back in for each cost ~130 us, a third of a lone
        write's round trip. After an error it goes back to the pool, which drops it if it is
        broken or leaves it ready, and the next append takes one again."""
        if not rows:
            return
        conn: AsyncConnection[Any] | None = self._append_conn
        if conn is None:
            conn = self._append_conn = await self.pool.getconn()
        try:
            if len(rows) <= APPEND_ONE_STATEMENT:  # one round trip: the statement commits
                await conn.execute(_APPEND_SQL, (stream, [r[0] for r in rows],
                                                 [r[1] for r in rows], [r[2] for r in rows],
                                                 rows[-1][0], stream), prepare=True)
                return  # prepared on the connection's first: one parse and plan, not one each
            async with conn.transaction(), conn.cursor() as cur:
                async with cur.copy("COPY bga_inbox (stream_id, seq, kind, payload) "
                                    "FROM STDIN") as copy:
                    for seq, kind, payload in rows:  # COPY: one round trip, no statement a row
                        await copy.write_row((stream, seq, kind, payload))
                await cur.execute("UPDATE bga_streams SET last_seq=%s WHERE stream_id=%s",
                                  (rows[-1][0], stream))
        except BaseException:
            await self._give_back_append_conn()
            raise

    async def _give_back_append_conn(self) -> None:
        conn, self._append_conn = self._append_conn, None
        if conn is not None and self._pool is not None:
            await self._pool.putconn(conn)

    async def committed_seq(self, stream: int) -> int:
        # FOR SHARE waits for an append whose COMMIT is still in flight (it holds the row
        # lock from its UPDATE until it commits or aborts): the answer is final, not early.
        async with self._conn() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_S * 1000)}ms'")
            cur = await conn.execute("SELECT last_seq FROM bga_streams WHERE stream_id=%s "
                                     "FOR SHARE", (stream,))
            row = await cur.fetchone()
        return int(row["last_seq"]) if row else 0

    async def read_inbox(self, limit: int, after: tuple[int, int] = (0, 0)) -> list[InboxRow]:
        rows = await self._fetch(
            "SELECT stream_id, seq, kind, payload FROM bga_inbox WHERE (stream_id, seq) > "
            "(%s, %s) ORDER BY stream_id, seq LIMIT %s", (*after, limit))
        return [InboxRow(r["stream_id"], r["seq"], r["kind"], bytes(r["payload"]))
                for r in rows]

    async def inbox_heads(self) -> dict[int, int]:
        return {int(r["stream_id"]): int(r["seq"]) for r in await self._fetch(INBOX_HEADS)}

    async def delete_folded(self, marks: dict[int, int]) -> None:
        if marks:
            async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.executemany("DELETE FROM bga_inbox WHERE stream_id=%s AND seq<=%s",
                                      list(marks.items()))

    async def pending_count(self) -> int:
        return int((await self._fetch("SELECT count(*) AS n FROM bga_inbox"))[0]["n"])

    async def quarantine(self, items: Sequence[Quarantined], at: float) -> None:
        if items:
            rows = [(q.row.stream, q.row.seq, q.row.kind, q.row.payload, q.reason, at)
                    for q in items]
            async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO bga_quarantine (stream_id, seq, kind, payload, reason, at) "
                    "VALUES (%s, %s, %s, %s, %s, %s)", rows)

    async def quarantined(self, limit: int = 100) -> list[dict]:
        rows = await self._fetch("SELECT stream_id, seq, kind, reason, at FROM bga_quarantine "
                                 "ORDER BY id DESC LIMIT %s", (limit,))
        return [{"stream": r["stream_id"], "seq": r["seq"], "kind": r["kind"],
                 "reason": r["reason"], "at": r["at"]} for r in rows]

    # -- checkpoints ----------------------------------------------------------------------
    async def latest_checkpoint_id(self, thread_id: str) -> str | None:
        rows = await self._fetch("SELECT max(checkpoint_id) AS latest FROM checkpoints "
                                 "WHERE thread_id=%s AND checkpoint_ns=''", (thread_id,))
        return rows[0]["latest"] if rows else None

    async def prune_checkpoints(self, thread_id: str, keep: int) -> int:
        """The retention prune (``prune_plan``) as SQL over the saver's tables, in every
        namespace, under the same per-thread lock as the compare-and-swap write."""
        async with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(_THREAD_LOCK_SQL, (LOCK_SPACE, thread_id))
            await cur.execute(PRUNE_DELTA_THREADS_SQL, ([thread_id], [thread_id]))
            refuse_delta(r["thread_id"] for r in await cur.fetchall())
            await cur.execute("SELECT checkpoint_ns, checkpoint_id, metadata->'parents'->>'' "
                              "AS root FROM checkpoints WHERE thread_id=%s", (thread_id,))
            doomed, cutoff = prune_plan(
                [(r["checkpoint_ns"], r["checkpoint_id"], r["root"])
                 for r in await cur.fetchall()], keep, history=True)
            await delete_checkpoints(cur, [(thread_id, ns, i) for ns, i in doomed])
            if cutoff is not None:  # writes whose checkpoint was never saved
                await cur.execute(
                    "DELETE FROM checkpoint_writes w WHERE w.thread_id=%s AND w.checkpoint_id<%s"
                    " AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id=w.thread_id"
                    " AND c.checkpoint_ns=w.checkpoint_ns AND c.checkpoint_id=w.checkpoint_id)",
                    (thread_id, cutoff))
            if doomed:  # the entries no kept checkpoint uses (state.backends.tree)
                await cur.execute("SELECT 1 FROM checkpoints WHERE thread_id=%s AND "
                                  "checkpoint_ns='' AND checkpoint->'channel_values' ? %s LIMIT 1",
                                  (thread_id, TREE_KEY))
                left = await cur.fetchone() is not None
                async with cur.connection.cursor(row_factory=tuple_row) as tcur:
                    await EntryStore.collect(PostgresSql(tcur), thread_id, cutoff, left)
            return len(doomed)

    async def is_empty(self) -> bool:
        rows = await self._fetch("SELECT EXISTS (SELECT 1 FROM checkpoints) AS cp, "
                                 "EXISTS (SELECT 1 FROM bga_inbox) AS rows")
        return not rows[0]["cp"] and not rows[0]["rows"]

    # -- locks ----------------------------------------------------------------------------
    async def _lock_conn(self) -> AsyncConnection[DictRow]:
        """A session for one lock: a spare one (its locks released) if it still answers,
        else a new one. The lock lives as long as its session; keepalives end the session
        soon after this host goes away."""
        while self._spare_lock_conns:
            conn = self._spare_lock_conns.pop()
            try:
                await conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                await conn.close()
        conn = await self._connect(**keepalives(self.failover_s))
        try:
            for statement in server_keepalives_sql(self.failover_s):
                await conn.execute(statement)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _acquire(self, name: str, wait: float | None) -> bool:
        if name in self._lock_conns:  # another task of this process holds it: wait as others do
            async def released() -> bool:
                return name not in self._lock_conns

            if not await poll(released, wait):
                return False
        key = lock_key(self.schema, name)
        conn = await self._lock_conn()
        try:
            if await try_session_lock(conn, key, wait):
                self._lock_conns[name] = conn
                return True
        except BaseException:
            await conn.close()
            raise
        await self._spare(conn)
        return False

    async def _spare(self, conn: AsyncConnection[DictRow]) -> None:
        """Keep a lock session that holds nothing for the next lock (a tick takes one per
        agent step: a new connection each would cost more than the step)."""
        if len(self._spare_lock_conns) < SPARE_LOCK_CONNS and not conn.closed:
            self._spare_lock_conns.append(conn)
        else:
            await conn.close()

    async def _renew(self, name: str) -> bool:
        """A round trip on the lock's session (the server ends a session idle for a lease);
        a session that errs or does not answer within half a lease is closed: lost."""
        conn = self._lock_conns.get(name)
        if conn is None or conn.closed:
            return False
        try:
            async with asyncio.timeout(lease_s(self.failover_s) / 2):
                await conn.execute("SELECT 1")
        except (psycopg.Error, OSError, TimeoutError):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await conn.close()
            return False
        return True

    async def _release(self, name: str) -> None:
        conn = self._lock_conns.pop(name, None)
        if conn is None:
            return
        try:
            if not conn.closed:
                async with conn.cursor(row_factory=tuple_row) as cur:
                    await cur.execute("SELECT pg_advisory_unlock(%s)",
                                      (lock_key(self.schema, name),))
                    if (await cur.fetchone() or (False,))[0]:
                        await self._spare(conn)  # unlocked: the session holds nothing now
                        return
        except psycopg.Error:
            pass  # the session is gone, and the lock with it
        await conn.close()  # ending the session drops the lock in any case

    async def aclose(self) -> None:
        await self._give_back_append_conn()
        await self.drop_leases()
        for name in list(self._lock_conns):
            await self._release(name)
        while self._spare_lock_conns:
            await self._spare_lock_conns.pop().close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
