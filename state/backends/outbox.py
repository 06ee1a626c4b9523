"""The alert outbox: alerts waiting to be sent, and the messages that carry them.

``nodes.notify`` decides what to alert inside the tick and writes each alert into the state's
``alerts`` channel, in the same checkpoint as the insight change that caused it, so a crash
never loses one. The sender (``graph.alerts``) copies them into ``bga_outbox`` (keyed by the
alert's idempotency key, so copying twice is harmless), groups each channel's alerts into a
message once the digest window has passed (``bga_alert_messages``: one row per message, with
its own idempotency key, its members fixed before the first try), sends it, and records every
try. A sender killed mid-delivery sends the same message with the same key again: at least
once, recognisably the same.

``OutboxStore`` is the interface and its semantics; ``SqlOutboxStore`` keeps it in tables,
migrations of the state database (``state.backends.migrations.OUTBOX_TABLES``), and a backend
hands out the store on its own connections (``Backend.outbox()``: a SQLite backend's write
connection, a PostgreSQL backend's pool, an in-process SQLite database per ``memory://`` URL);
the SQL below is the one copy for every dialect (``state.backends.aiodb``). A Redis state
has ``state.backends.redisdb.RedisOutboxStore`` (keys under the state's prefix, Lua steps).
The public names are re-exported by ``state.outbox``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import orjson

from state.backends.aiodb import AsyncDb

KEEP_S = 30 * 86_400.0  # sent or dropped messages (and their alerts) kept this long
KEEP_MESSAGES = 10_000

PENDING, SENT, DROPPED = "pending", "sent", "dropped"


def status_after(ok: bool, drop: bool) -> str:
    """A message's status after one try: sent, dropped (no more tries), or still pending."""
    return SENT if ok else DROPPED if drop else PENDING


def history_event(key: str, event: str, subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What the history shows of one alert a message carried."""
    return {"key": key, "event": event, "subject": subject,
            **{f: payload.get(f) for f in ("insight_type", "priority", "summary")}}


class OutboxStore(abc.ABC):
    """The alert outbox of one state database (``Backend.outbox()``; the backend closes its
    connections): the interface the sender (``graph.alerts``), ``bga alerts`` and the dashboard
    use. Two stores implement it with the same semantics: ``SqlOutboxStore`` (the tables, on
    SQLite and PostgreSQL) and ``state.backends.redisdb.RedisOutboxStore`` (plain Redis keys;
    its own implementation of every method, each atomic step one Lua script).
    ``tests/integration/test_alerts*.py`` run both against the same assertions."""

    @abc.abstractmethod
    async def enqueue(self, alerts: Sequence[dict[str, Any]], now: float) -> int:
        """Add alerts (``nodes.notify`` entries) not yet in the outbox; returns how many were
        new. Keyed by the alert's idempotency key: adding one twice changes nothing."""

    @abc.abstractmethod
    async def unbatched(self, channel: str) -> list[dict[str, Any]]:
        """A channel's alerts not yet in a message, oldest first, with ``created_at``."""

    @abc.abstractmethod
    async def last_event(self, channel: str, subject: str) -> dict[str, Any] | None:
        """The newest alert about ``subject`` on ``channel`` (its payload), if any."""

    @abc.abstractmethod
    async def make_message(self, key: str, channel: str, alert_keys: Sequence[str],
                           now: float) -> None:
        """Fix a message's members before its first try (one transaction): after a crash
        the same alerts go out again under the same key."""

    @abc.abstractmethod
    async def due(self, now: float) -> list[dict[str, Any]]:
        """Pending messages whose next try is due, oldest first, with their alerts."""

    @abc.abstractmethod
    async def record(self, key: str, *, now: float, ok: bool, error: str | None = None,
                     next_at: float | None = None, drop: bool = False) -> None:
        """One try of a message: sent, or failed (retry at ``next_at``, or dropped)."""

    @abc.abstractmethod
    async def add_sent(self, key: str, channel: str, now: float, *, ok: bool,
                       error: str | None, alert: dict[str, Any]) -> None:
        """Record a message sent outside the queue (``bga alerts test``) in the history."""

    @abc.abstractmethod
    async def history(self, limit: int = 200) -> list[dict[str, Any]]:
        """Newest messages first: channel, status, tries, last error, and what they carried."""

    @abc.abstractmethod
    async def counts(self) -> dict[str, int]:
        """Alerts waiting for a message, and messages per status."""

    @abc.abstractmethod
    async def prune(self, now: float, keep_s: float = KEEP_S,
                    keep_messages: int = KEEP_MESSAGES) -> None:
        """Forget sent and dropped messages (and their alerts) older than ``keep_s``, and all
        but the newest ``keep_messages``."""


class SqlOutboxStore(OutboxStore):
    """The outbox tables of one state database (``bga_outbox``, ``bga_alert_messages``), on
    its backend's connections (``state.backends.aiodb``)."""

    def __init__(self, db: AsyncDb) -> None:
        self._db = db

    # -- alerts -----------------------------------------------------------------------------
    async def enqueue(self, alerts: Sequence[dict[str, Any]], now: float) -> int:
        if not alerts:
            return 0
        async with self._db.turn(write=True) as sql:
            known = {k for (k,) in await sql.where_in("SELECT key FROM bga_outbox WHERE key",
                                                      [a["key"] for a in alerts])}
            new = [a for a in alerts if a["key"] not in known]
            await sql.many("INSERT INTO bga_outbox (key, channel, subject, event, created_at, "
                           "payload) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                           [(a["key"], a["channel"], a["subject"], a["event"], now,
                             orjson.dumps(a).decode()) for a in new])
        return len(new)

    async def unbatched(self, channel: str) -> list[dict[str, Any]]:
        async with self._db.turn() as sql:
            rows = await sql.all("SELECT payload, created_at FROM bga_outbox WHERE channel=? "
                                 "AND message IS NULL ORDER BY created_at, key", (channel,))
        return [{**orjson.loads(p), "created_at": c} for p, c in rows]

    async def last_event(self, channel: str, subject: str) -> dict[str, Any] | None:
        async with self._db.turn() as sql:
            rows = await sql.all("SELECT payload FROM bga_outbox WHERE channel=? AND subject=? "
                                 "ORDER BY created_at DESC, key DESC LIMIT 1", (channel, subject))
        return orjson.loads(rows[0][0]) if rows else None

    # -- messages ---------------------------------------------------------------------------
    async def make_message(self, key: str, channel: str, alert_keys: Sequence[str],
                           now: float) -> None:
        async with self._db.turn(write=True) as sql:
            await sql.all("INSERT INTO bga_alert_messages (key, channel, created_at, alerts, "
                          "status, attempts, next_at) VALUES (?, ?, ?, ?, ?, 0, ?) "
                          "ON CONFLICT (key) DO NOTHING",
                          (key, channel, now, len(alert_keys), PENDING, now))
            await sql.all("UPDATE bga_outbox SET message=? WHERE message IS NULL AND key IN "
                          f"({','.join('?' * len(alert_keys))})", (key, *alert_keys))

    async def due(self, now: float) -> list[dict[str, Any]]:
        out = []
        async with self._db.turn() as sql:
            for key, channel, created, attempts in await sql.all(
                    "SELECT key, channel, created_at, attempts FROM bga_alert_messages "
                    "WHERE status=? AND next_at<=? ORDER BY created_at, key", (PENDING, now)):
                members = [orjson.loads(p) for (p,) in await sql.all(
                    "SELECT payload FROM bga_outbox WHERE message=? ORDER BY created_at, key",
                    (key,))]
                out.append({"key": key, "channel": channel, "created_at": created,
                            "attempts": attempts, "alerts": members})
        return out

    async def record(self, key: str, *, now: float, ok: bool, error: str | None = None,
                     next_at: float | None = None, drop: bool = False) -> None:
        status = status_after(ok, drop)
        async with self._db.turn(write=True) as sql:
            await sql.all("UPDATE bga_alert_messages SET status=?, attempts=attempts+1, "
                          "last_try_at=?, last_error=?, next_at=?, sent_at=? WHERE key=?",
                          (status, now, error, next_at if next_at is not None else now,
                           now if ok else None, key))

    async def add_sent(self, key: str, channel: str, now: float, *, ok: bool,
                       error: str | None, alert: dict[str, Any]) -> None:
        async with self._db.turn(write=True) as sql:
            await sql.all("INSERT INTO bga_outbox (key, channel, subject, event, created_at, "
                          "payload, message) VALUES (?, ?, ?, ?, ?, ?, ?) "
                          "ON CONFLICT (key) DO NOTHING",
                          (alert["key"], channel, alert["subject"], alert["event"], now,
                           orjson.dumps(alert).decode(), key))
            await sql.all("INSERT INTO bga_alert_messages (key, channel, created_at, alerts, "
                          "status, attempts, next_at, last_error, last_try_at, sent_at) VALUES "
                          "(?, ?, ?, 1, ?, 1, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                          (key, channel, now, SENT if ok else DROPPED, now, error, now,
                           now if ok else None))

    async def history(self, limit: int = 200) -> list[dict[str, Any]]:
        out = []
        async with self._db.turn() as sql:
            for row in await sql.all(
                    "SELECT key, channel, created_at, alerts, status, attempts, next_at, "
                    "last_error, last_try_at, sent_at FROM bga_alert_messages "
                    "ORDER BY created_at DESC, key DESC LIMIT ?", (limit,)):
                rec = dict(zip(("key", "channel", "created_at", "alerts", "status", "attempts",
                                "next_at", "last_error", "last_try_at", "sent_at"), row,
                               strict=True))
                rec["events"] = [
                    history_event(k, e, s, orjson.loads(p)) for k, e, s, p in await sql.all(
                        "SELECT key, event, subject, payload FROM bga_outbox WHERE message=? "
                        "ORDER BY created_at, key", (rec["key"],))]
                out.append(rec)
        return out

    async def counts(self) -> dict[str, int]:
        async with self._db.turn() as sql:
            waiting = await sql.all("SELECT count(*) FROM bga_outbox WHERE message IS NULL")
            out = {"waiting": int(waiting[0][0])}
            for status, n in await sql.all(
                    "SELECT status, count(*) FROM bga_alert_messages GROUP BY status"):
                out[str(status)] = int(n)
        return out

    async def prune(self, now: float, keep_s: float = KEEP_S,
                    keep_messages: int = KEEP_MESSAGES) -> None:
        old = ("SELECT key FROM bga_alert_messages WHERE status<>? AND (created_at<? OR key "
               "NOT IN (SELECT key FROM bga_alert_messages ORDER BY created_at DESC LIMIT ?))")
        params = (PENDING, now - keep_s, keep_messages)
        async with self._db.turn(write=True) as sql:
            await sql.all(f"DELETE FROM bga_outbox WHERE message IN ({old})", params)
            await sql.all(f"DELETE FROM bga_alert_messages WHERE key IN ({old})", params)
