"""Leases: every lock a backend holds (the leader's, the fold lock, each agent's) lapses unless
its holder keeps renewing it, so a standby takes over from a holder that was killed, that hangs
(SIGSTOP, a stuck event loop) or whose host vanished, within the failover time.

One rule for both backends, with the numbers derived from ``failover_s`` here only:

- a lease lasts ``lease_s`` (half the failover time) from its last renewal; the holder renews
  every ``renew_s`` (a quarter of that, so three renewals may fail before it lapses);
- the holder judges its own lease by its monotonic clock from the *start* of its last successful
  renewal (earlier than any moment the database counts from), and ``Backend.holds`` says False
  as soon as it lapsed, was taken over or its session is gone: the scheduler stops ticking and
  competes again;
- a holder that has not noticed yet is fenced by the compare-and-swap checkpoint of the system
  thread (``state.backends.history``): its tick from a state that moved on is refused.

SQLite (one host's file): ``SqliteLeases``, a row per lock in ``bga_leases`` (token, expiry on
the host's clock, whether its holder also has the lock file's ``flock``). A free ``flock`` next
to a row whose holder had it means that holder died or let go: taken at once, as before. A row
whose expiry passed is taken even though its ``flock`` is still held: the holder is alive but
not renewing (stopped). Renewing bumps the expiry only while the token is still the holder's.

PostgreSQL: the session advisory lock on a session of its own, which the server ends once it
sat idle for ``lease_s`` (``idle_session_timeout``): the holder's renewal is a round trip on
that session. A stopped holder sends nothing, and a vanished host's renewals never arrive, so
the server ends the session and its lock goes with it; a killed holder's session ends at once.
No clocks of two hosts are compared: the server alone decides. See ``lock_session_sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from state.backends.syncdb import sqlite_connect

log = logging.getLogger("bga.lease")

RENEWALS = 4  # renewals per lease: a holder can miss three and still hold it
STANDBY_POLL_S = 0.1  # longest pause between a standby's attempts

monotonic: Callable[[], float] = time.monotonic  # the holder's clock (tests may drive it)
wall: Callable[[], float] = time.time  # SQLite lease rows' clock: one host, one clock


def lease_s(failover_s: float) -> float:
    """How long a lock outlives its holder's last renewal: half the failover time, the other
    half is for the standby's poll and the start of its first tick."""
    return failover_s / 2


def renew_s(failover_s: float) -> float:
    """How often a holder renews each lock it holds."""
    return lease_s(failover_s) / RENEWALS


def lock_session_sql(failover_s: float) -> list[str]:
    """Settings of a PostgreSQL lock session: the server ends it once idle for a lease (the
    holder stopped renewing: SIGSTOP, or a host whose packets stopped), and it never sits in a
    statement or an open transaction longer than the failover time."""
    ms = int(failover_s * 1000)
    return [f"SET idle_session_timeout = {int(lease_s(failover_s) * 1000)}",
            f"SET statement_timeout = {ms}", f"SET idle_in_transaction_session_timeout = {ms}"]


def pool_session_sql(failover_s: float) -> list[str]:
    """Settings of a PostgreSQL pool session: a transaction left open by a stopped or vanished
    process (holding the checkpoint's thread lock, say) is ended by the server within a lease,
    so the next leader's commit does not wait on it forever."""
    return [f"SET idle_in_transaction_session_timeout = {int(lease_s(failover_s) * 1000)}"]


Renew = Callable[[str], Awaitable[bool]]


class Leases:
    """The locks one backend holds and their renewal: one background task renews each held
    lock every ``renew_s``; ``renew`` also runs on demand (``Backend.holds``).

    ``renew_one(name)`` is the backend's renewal: True renewed, False lost for good (taken
    over, session gone); an exception leaves the lease as it was until its deadline."""

    def __init__(self, failover_s: float, renew_one: Renew) -> None:
        self.lease = lease_s(failover_s)
        self.every = renew_s(failover_s)
        self._renew_one = renew_one
        self._deadline: dict[str, float] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._said: dict[str, str] = {}

    def held(self, name: str) -> None:
        """Lock ``name`` was just taken: valid for a lease less one renewal period (a margin
        for the time the taking itself took), renewed from now on."""
        self._deadline[name] = monotonic() + self.lease - self.every
        self._said.pop(name, None)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name="bga-lease-renewal")

    async def dropped(self, name: str) -> None:
        """Lock ``name`` is being released: no more renewals; the renewal task ends with the
        last lock (after finishing a renewal in flight, never cancelled in the middle)."""
        self._deadline.pop(name, None)
        if not self._deadline and self._task is not None:
            task, self._task = self._task, None
            self._wake.set()
            with contextlib.suppress(Exception):
                await task

    async def drop_all(self) -> None:
        for name in list(self._deadline):
            await self.dropped(name)

    def valid(self, name: str) -> bool:
        deadline = self._deadline.get(name)
        return deadline is not None and monotonic() < deadline

    async def renew(self, name: str) -> bool:
        """Renew lock ``name`` now; whether it is still held (False: lapsed or lost)."""
        if name not in self._deadline:
            return False
        started = monotonic()
        try:
            ok = await self._renew_one(name)
        except Exception as exc:  # unknown: the lease stands until its deadline
            self._say(name, f"cannot renew the lease on lock {name!r} ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]}); it lapses unless renewed")
            return self.valid(name)
        if name not in self._deadline:  # released meanwhile
            return False
        if not ok:
            self._say(name, f"lost the lease on lock {name!r} (taken over, or its database "
                            "session ended)")
            self._deadline[name] = float("-inf")
            return False
        if self._deadline[name] != float("-inf"):
            self._deadline[name] = max(self._deadline[name], started + self.lease)
            self._said.pop(name, None)
        return self.valid(name)

    def _say(self, name: str, line: str) -> None:
        if self._said.get(name) != line:  # one line per spell of trouble, not per renewal
            self._said[name] = line
            log.warning(line)

    async def _loop(self) -> None:
        while self._deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.every)
            for name in list(self._deadline):
                if self._deadline.get(name, float("-inf")) != float("-inf"):
                    await self.renew(name)


# -- SQLite: a lease row per lock next to the lock file's flock --------------------------------

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bga_leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,
    flock INTEGER NOT NULL, expires_at REAL NOT NULL
)
"""


@dataclass
class _Held:
    fd: int | None  # the lock file's flock, if this holder has it
    token: int


def _try_flock(path: str) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except BlockingIOError:
        os.close(fd)
        return None


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SqliteLeases:
    """The lease rows of one SQLite state file, on a connection of their own (blocking calls:
    run them in a thread, one at a time)."""

    def __init__(self, db_path: Path, failover_s: float) -> None:
        self.db_path = db_path
        self.lease = lease_s(failover_s)
        self.busy_ms = max(100, int(renew_s(failover_s) * 1000))
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._conn: sqlite3.Connection | None = None
        self.held: dict[str, _Held] = {}

    def lock_path(self, name: str) -> str:
        return f"{self.db_path}{'.lock' if name == 'fold' else f'.{name}.lock'}"

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            # WAL with synchronous=NORMAL, as every connection to the file: a commit (one per
            # lock taken, one per agent step) does not wait for an fsync (~4 ms each), and a
            # killed process loses nothing; the flocks go with a lost host anyway
            self._conn = sqlite_connect(self.db_path, busy_timeout_s=self.busy_ms / 1000)
        return self._conn

    def _lapsed(self, expires_at: float, now: float) -> bool:
        # an expiry further ahead than one lease comes from a clock that was set back
        return expires_at <= now or expires_at > now + 2 * self.lease

    def try_take(self, name: str) -> bool:
        """Take lock ``name`` once: with its flock (the previous holder is gone or let go) or,
        without it, when the previous holder's lease has lapsed (it is alive but stopped)."""
        if name in self.held:  # another task of this process holds it: busy, as for others
            return False
        fd = _try_flock(self.lock_path(name))
        conn = self._db()
        try:
            if fd is None:  # the common busy case answers from a read, without a write
                row = conn.execute("SELECT expires_at FROM bga_leases WHERE name=?",
                                   (name,)).fetchone()
                if row is None or not self._lapsed(row[0], wall()):
                    return False
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT token, flock, expires_at FROM bga_leases "
                                   "WHERE name=?", (name,)).fetchone()
                now = wall()
                free = (self._lapsed(row[2], now) or (fd is not None and bool(row[1]))
                        if row is not None else fd is not None)
                if not free:
                    conn.execute("ROLLBACK")
                    if fd is not None:
                        os.close(fd)
                    return False
                token = (row[0] if row is not None else 0) + 1
                conn.execute("INSERT OR REPLACE INTO bga_leases VALUES (?, ?, ?, ?, ?)",
                             (name, self.holder, token, int(fd is not None), now + self.lease))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        self.held[name] = _Held(fd, token)
        return True

    def take(self, name: str) -> bool:
        """``try_take``, with a database busy for longer than a renewal counted as not taken."""
        try:
            return self.try_take(name)
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                return False
            raise

    def renew(self, name: str) -> bool:
        """Push the expiry of a held lock one lease ahead; False if another holder took it.
        A holder that took it without the flock picks the flock up once it comes free, so
        its own death is noticed at once again."""
        held = self.held.get(name)
        if held is None:
            return False
        if held.fd is None:
            held.fd = _try_flock(self.lock_path(name))
        cur = self._db().execute(
            "UPDATE bga_leases SET expires_at=?, flock=? WHERE name=? AND token=?",
            (wall() + self.lease, int(held.fd is not None), name, held.token))
        return cur.rowcount == 1

    def release(self, name: str) -> None:
        held = self.held.pop(name, None)
        if held is None:
            return
        if held.fd is not None:
            os.close(held.fd)  # a free flock beside a row that had it: the next taker takes it
            return
        with contextlib.suppress(sqlite3.Error):  # without the flock: end the lease in the row
            self._db().execute("UPDATE bga_leases SET expires_at=0 WHERE name=? AND token=?",
                               (name, held.token))

    def close(self) -> None:
        for name in list(self.held):
            self.release(name)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def poll(attempt: Callable[[], Awaitable[bool]], wait: float | None) -> bool:
    """Try ``attempt`` until it succeeds (``wait`` None), once (0) or for ``wait`` seconds,
    with pauses doubling from 5 ms to ``STANDBY_POLL_S``."""
    deadline = None if wait is None else time.monotonic() + wait
    delay = 0.005
    while True:
        if await attempt():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, STANDBY_POLL_S)
