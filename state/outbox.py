"""The alert outbox: alerts waiting to be sent, and the messages that carry them.

``nodes.notify`` decides what to alert inside the tick and writes each alert into the state's
``alerts`` channel, in the same checkpoint as the insight change that caused it, so a crash
never loses one. The sender (``graph.alerts``) copies them into ``bga_outbox`` (keyed by the
alert's idempotency key, so copying twice is harmless), groups each channel's alerts into a
message once the digest window has passed (``bga_alert_messages``: one row per message, with
its own idempotency key, its members fixed before the first try), sends it, and records every
try. A sender killed mid-delivery sends the same message with the same key again: at least
once, recognisably the same.

SQLite and PostgreSQL databases get the tables from a migration of the state database
(``state.backends.migrations.OUTBOX_TABLES``); every store also makes them (the same
statements) when they are missing (``memory://`` URLs use a shared in-memory SQLite database
per URL).
One code path for every backend: plain SQL through a DB-API connection in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import orjson

from state.backends.migrations import OUTBOX_TABLES
from state.backends.url import is_postgres
from state.redact import redact

KEEP_S = 30 * 86_400.0  # sent or dropped messages (and their alerts) kept this long
KEEP_MESSAGES = 10_000

PENDING, SENT, DROPPED = "pending", "sent", "dropped"
APPLICATION_NAME = "bga-outbox"  # PostgreSQL sessions of the outbox say so

_memory_keepers: dict[str, sqlite3.Connection] = {}
_memory_lock = threading.Lock()


class OutboxStore:
    """The outbox tables of one database (``sqlite:///``, ``postgresql://``, ``memory://``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pg = is_postgres(url)
        self._conn: Any = None
        self._lock = asyncio.Lock()

    # -- connection -------------------------------------------------------------------------
    def _connect(self) -> Any:
        conn: Any
        if self._pg:
            import psycopg

            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10,
                                   application_name=APPLICATION_NAME)
        elif self.url.startswith("memory://"):
            uri = f"file:bga_outbox_{self.url[len('memory://'):]}?mode=memory&cache=shared"
            with _memory_lock:  # the database lives while one connection to it is open
                if uri not in _memory_keepers:
                    _memory_keepers[uri] = sqlite3.connect(uri, uri=True,
                                                           check_same_thread=False)
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        elif self.url.startswith("sqlite:///"):
            conn = sqlite3.connect(self.url[len("sqlite:///"):], timeout=60,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=60000")
        else:
            raise ValueError(f"no outbox for database URL {redact(self.url)!r}")
        for statement in OUTBOX_TABLES["postgres" if self._pg else "sqlite"]:
            conn.execute(statement)
        return conn

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    async def _run(self, fn: Any, *args: Any) -> Any:
        """``fn`` on this store's connection in a worker thread; after a failure the
        connection is dropped, so the next call connects again (a restarted server, a
        terminated session)."""
        async with self._lock:
            if self._conn is None:
                self._conn = await asyncio.to_thread(self._connect)
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception:
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(conn.close)
                raise

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self._conn.execute(self._sql(sql), tuple(params))
        return list(cur.fetchall())

    def _tx(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run statements in one transaction: all or nothing."""
        conn = self._conn
        if self._pg:
            with conn.transaction():
                for sql, params in statements:
                    conn.execute(self._sql(sql), tuple(params))
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                conn.execute(sql, tuple(params))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def aclose(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await asyncio.to_thread(self._conn.close)
                self._conn = None

    async def __aenter__(self) -> OutboxStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- alerts -----------------------------------------------------------------------------
    async def enqueue(self, alerts: Sequence[dict[str, Any]], now: float) -> int:
        """Add alerts (``nodes.notify`` entries) not yet in the outbox; returns how many were
        new. Keyed by the alert's idempotency key: adding one twice changes nothing."""
        if not alerts:
            return 0

        def run() -> int:
            keys = [a["key"] for a in alerts]
            known = set()
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                known |= {k for (k,) in self._rows(
                    f"SELECT key FROM bga_outbox WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk)}
            new = [a for a in alerts if a["key"] not in known]
            self._tx([("INSERT INTO bga_outbox (key, channel, subject, event, created_at, "
                       "payload) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                       (a["key"], a["channel"], a["subject"], a["event"], now,
                        orjson.dumps(a).decode())) for a in new])
            return len(new)

        return int(await self._run(run))

    async def unbatched(self, channel: str) -> list[dict[str, Any]]:
        """A channel's alerts not yet in a message, oldest first, with ``created_at``."""
        rows = await self._run(self._rows, "SELECT payload, created_at FROM bga_outbox WHERE "
                               "channel=? AND message IS NULL ORDER BY created_at, key",
                               (channel,))
        return [{**orjson.loads(p), "created_at": c} for p, c in rows]

    async def last_event(self, channel: str, subject: str) -> dict[str, Any] | None:
        """The newest alert about ``subject`` on ``channel`` (its payload), if any."""
        rows = await self._run(self._rows, "SELECT payload FROM bga_outbox WHERE channel=? "
                               "AND subject=? ORDER BY created_at DESC, key DESC LIMIT 1",
                               (channel, subject))
        return orjson.loads(rows[0][0]) if rows else None

    # -- messages ---------------------------------------------------------------------------
    async def make_message(self, key: str, channel: str, alert_keys: Sequence[str],
                           now: float) -> None:
        """Fix a message's members before its first try (one transaction): after a crash
        the same alerts go out again under the same key."""
        marks = "?" * len(alert_keys)
        await self._run(self._tx, [
            ("INSERT INTO bga_alert_messages (key, channel, created_at, alerts, status, "
             "attempts, next_at) VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT (key) DO NOTHING",
             (key, channel, now, len(alert_keys), PENDING, now)),
            (f"UPDATE bga_outbox SET message=? WHERE message IS NULL AND key IN "
             f"({','.join(marks)})", (key, *alert_keys)),
        ])

    async def due(self, now: float) -> list[dict[str, Any]]:
        """Pending messages whose next try is due, oldest first, with their alerts."""

        def run() -> list[dict[str, Any]]:
            out = []
            for key, channel, created, attempts in self._rows(
                    "SELECT key, channel, created_at, attempts FROM bga_alert_messages "
                    "WHERE status=? AND next_at<=? ORDER BY created_at, key", (PENDING, now)):
                members = [orjson.loads(p) for (p,) in self._rows(
                    "SELECT payload FROM bga_outbox WHERE message=? ORDER BY created_at, key",
                    (key,))]
                out.append({"key": key, "channel": channel, "created_at": created,
                            "attempts": attempts, "alerts": members})
            return out

        return list(await self._run(run))

    async def record(self, key: str, *, now: float, ok: bool, error: str | None = None,
                     next_at: float | None = None, drop: bool = False) -> None:
        """One try of a message: sent, or failed (retry at ``next_at``, or dropped)."""
        status = SENT if ok else DROPPED if drop else PENDING
        await self._run(self._tx, [(
            "UPDATE bga_alert_messages SET status=?, attempts=attempts+1, last_try_at=?, "
            "last_error=?, next_at=?, sent_at=? WHERE key=?",
            (status, now, error, next_at if next_at is not None else now,
             now if ok else None, key))])

    async def add_sent(self, key: str, channel: str, now: float, *, ok: bool,
                       error: str | None, alert: dict[str, Any]) -> None:
        """Record a message sent outside the queue (``bga alerts test``) in the history."""
        await self._run(self._tx, [
            ("INSERT INTO bga_outbox (key, channel, subject, event, created_at, payload, "
             "message) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
             (alert["key"], channel, alert["subject"], alert["event"], now,
              orjson.dumps(alert).decode(), key)),
            ("INSERT INTO bga_alert_messages (key, channel, created_at, alerts, status, "
             "attempts, next_at, last_error, last_try_at, sent_at) VALUES "
             "(?, ?, ?, 1, ?, 1, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
             (key, channel, now, SENT if ok else DROPPED, now, error, now,
              now if ok else None)),
        ])

    async def history(self, limit: int = 200) -> list[dict[str, Any]]:
        """Newest messages first: channel, status, tries, last error, and what they carried."""

        def run() -> list[dict[str, Any]]:
            out = []
            for row in self._rows(
                    "SELECT key, channel, created_at, alerts, status, attempts, next_at, "
                    "last_error, last_try_at, sent_at FROM bga_alert_messages "
                    "ORDER BY created_at DESC, key DESC LIMIT ?", (limit,)):
                rec = dict(zip(("key", "channel", "created_at", "alerts", "status", "attempts",
                                "next_at", "last_error", "last_try_at", "sent_at"), row,
                               strict=True))
                rec["events"] = [
                    {"key": k, "event": e, "subject": s, **{f: orjson.loads(p).get(f) for f in
                                                           ("insight_type", "priority",
                                                            "summary")}}
                    for k, e, s, p in self._rows(
                        "SELECT key, event, subject, payload FROM bga_outbox WHERE message=? "
                        "ORDER BY created_at, key", (rec["key"],))]
                out.append(rec)
            return out

        return list(await self._run(run))

    async def counts(self) -> dict[str, int]:
        """Alerts waiting for a message, and messages per status."""

        def run() -> dict[str, int]:
            out = {"waiting": int(self._rows(
                "SELECT count(*) FROM bga_outbox WHERE message IS NULL")[0][0])}
            for status, n in self._rows(
                    "SELECT status, count(*) FROM bga_alert_messages GROUP BY status"):
                out[str(status)] = int(n)
            return out

        return dict(await self._run(run))

    async def prune(self, now: float, keep_s: float = KEEP_S,
                    keep_messages: int = KEEP_MESSAGES) -> None:
        """Forget sent and dropped messages (and their alerts) older than ``keep_s``, and all
        but the newest ``keep_messages``."""
        cutoff = now - keep_s
        old = ("SELECT key FROM bga_alert_messages WHERE status<>? AND (created_at<? OR key "
               "NOT IN (SELECT key FROM bga_alert_messages ORDER BY created_at DESC LIMIT ?))")
        params = (PENDING, cutoff, keep_messages)
        await self._run(self._tx, [
            (f"DELETE FROM bga_outbox WHERE message IN ({old})", params),
            (f"DELETE FROM bga_alert_messages WHERE key IN ({old})", params),
        ])
