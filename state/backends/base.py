"""The narrow interface a storage backend implements: the one database object per URL.

A backend owns every table of its database and their migrations (``state.backends.migrations``):
the LangGraph checkpointer, the durable inbox of events written from outside the graph (with
its streams), the quarantine of rows that could not be folded, the locks that let one process
at a time fold, lead or step an agent, the local trace store (``traces()``) and the alert
outbox (``outbox()``), both on the backend's own connections. It also says
where the importer's profiles live (``profiles_location``; same migration runner). Everything
above it (fold, queries, API, graph) is the same code for every backend.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from state.backends.lease import Leases
from state.backends.outbox import OutboxStore
from state.backends.syncdb import nul_free
from state.backends.traces import TraceStore
from state.backends.url import parse_url
from state.fold import InboxRow, Quarantined
from state.redact import redact

InboxWrite = tuple[int, str, bytes]  # (seq, kind, payload)
__all__ = ["Backend", "InboxWrite", "LockBusy", "StaleCheckpoint", "describe_trouble",
           "nul_free"]


class StaleCheckpoint(RuntimeError):
    """A checkpoint was written from a state that another writer had already replaced."""


class LockBusy(RuntimeError):
    """Another process holds the fold lock of this database."""


DEFAULT_FAILOVER_S = 15.0

_TROUBLE = (  # (what a driver says, what it means), first match wins
    ("database or disk is full", "disk full"),
    ("cannot rollback - no transaction is active", "disk full (SQLite rolled the write back)"),
    ("no space left on device", "disk full"),
    ("database disk image is malformed", "database file is corrupt"),
    ("file is not a database", "database file is corrupt"),
    ("unexpected end of file", "database file is corrupt (truncated)"),
    ("database is locked", "database is locked by another process"),
    ("terminating connection due to administrator command", "server shut the connection down"),
    ("the database system is shutting down", "server is shutting down"),
    ("the database system is starting up", "server is starting up"),
    ("connection refused", "server unreachable"),
    ("server closed the connection", "connection to the server lost"),
    ("connection is lost", "connection to the server lost"),
    ("the connection is closed", "connection to the server lost"),
    ("couldn't get a connection", "server unreachable (no connection within the timeout)"),
)


def describe_trouble(exc: BaseException, where: str) -> str:
    """One line saying what went wrong with the database at ``where`` (disk full, corrupt
    file, server gone, ...), for logs and operators; never a traceback."""
    text = " ".join(str(exc).split())[:300] or type(exc).__name__
    low = text.lower()
    meaning = next((m for needle, m in _TROUBLE if needle in low), None)
    if meaning is None:
        return f"database error at {where}: {type(exc).__name__}: {text}"
    return f"{meaning} at {where}: {text}"


# each stream's highest sequence number in the inbox, with one index probe per stream (a skip
# scan: GROUP BY would read every row)
INBOX_HEADS = (
    "WITH RECURSIVE s(id) AS (SELECT min(stream_id) FROM bga_inbox UNION ALL "
    "SELECT (SELECT min(stream_id) FROM bga_inbox WHERE stream_id > s.id) FROM s "
    "WHERE s.id IS NOT NULL) "
    "SELECT id AS stream_id, (SELECT max(seq) FROM bga_inbox WHERE stream_id = s.id) AS seq "
    "FROM s WHERE id IS NOT NULL")

class Backend(abc.ABC):
    url: str
    checkpointer: BaseCheckpointSaver
    failover_s: float = DEFAULT_FAILOVER_S
    """Within how long a standby takes over a lock whose holder stopped renewing it (hung,
    or its host vanished; ``state.backends.lease`` derives the lease from it). A killed
    process's locks go at once on every backend."""

    @property
    def where(self) -> str:
        """The URL for messages and logs: any password in it redacted."""
        return redact(self.url)

    @property
    def profiles_location(self) -> str:
        """Where the importer's profiles of this database live (``DatabaseUrl``)."""
        return parse_url(self.url).profiles_location

    @abc.abstractmethod
    async def setup(self, *, create: bool = True, read_only: bool = False) -> None:
        """Create or migrate the schema; idempotent and safe to race. With ``create=False`` a
        missing database is an error (tools must not create one by mistake). ``read_only``
        migrates nothing and writes nothing: it needs a database whose schema is current
        (``SchemaNotReady``, a ValueError, says what is missing otherwise)."""

    @abc.abstractmethod
    def traces(self) -> TraceStore:
        """The local trace store of this database, on the backend's own connections (use it
        after ``setup()``; ``aclose()`` closes it with the backend)."""

    @abc.abstractmethod
    def outbox(self) -> OutboxStore:
        """The alert outbox of this database, on the backend's own connections (use it
        after ``setup()``; ``aclose()`` closes them with the backend)."""

    @abc.abstractmethod
    async def open_stream(self, producer: str) -> int:
        """A new inbox stream id: each SharedState instance writes its own sequence."""

    @abc.abstractmethod
    async def close_stream(self, stream: int) -> None: ...

    @abc.abstractmethod
    async def append(self, stream: int, rows: Sequence[InboxWrite]) -> None:
        """Insert rows in one transaction (group commit); all or nothing; a stream's rows in
        sequence order, each append after the previous one committed."""

    append_now_rows = 0
    """The most rows an ``append_now`` may take (0: this backend has none)."""

    def append_now(self, stream: int, rows: Sequence[InboxWrite]) -> bool:
        """``append`` done in this call, without waiting for anything, if the backend can
        (an append of at most ``append_now_rows`` rows on SQLite); False, and nothing
        written, if not. The caller then uses ``append``. Rows and order as for ``append``."""
        return False

    @abc.abstractmethod
    async def committed_seq(self, stream: int) -> int:
        """Highest sequence number of ``stream`` whose batch committed: how a writer learns the
        outcome of a commit whose reply it never got. (SQLite reads it off the inbox and the
        mark ``delete_folded`` keeps; the others record it with each append.)"""

    @abc.abstractmethod
    async def read_inbox(self, limit: int, after: tuple[int, int] = (0, 0)) -> list[InboxRow]:
        """Up to ``limit`` rows after ``after`` in (stream, seq) order (keyset paging)."""

    async def inbox_heads(self) -> dict[int, int] | None:
        """Each stream that has rows in the inbox -> its highest sequence number there, read
        without reading the rows (None: this backend cannot tell, and readers re-read the
        inbox every time). A stream appends in sequence order and rows go only once a
        committed checkpoint covers them, so while the latest checkpoint is the same, equal
        heads mean the same unfolded rows: ``SharedState.read`` lays them over it once."""
        return None

    def share_trees(self, trees: dict[str, Any]) -> None:
        """Let this handle's checkpoint loads start from the decoded trees in ``trees`` (a dict
        a caller keeps across handles of one database, e.g. the dashboard's) and leave theirs
        there, so a new checkpoint read by a new handle reads only the entries born since
        (``state.backends.tree.EntryStore``). A backend that stores no entries ignores it."""
        return None

    @abc.abstractmethod
    async def delete_folded(self, marks: dict[int, int]) -> None:
        """Delete rows whose seq is at or below their stream's mark (on SQLite the marks are
        kept, in the same transaction, for ``committed_seq``)."""

    @abc.abstractmethod
    async def pending_count(self) -> int: ...

    @abc.abstractmethod
    async def quarantine(self, items: Sequence[Quarantined], at: float) -> None: ...

    @abc.abstractmethod
    async def quarantined(self, limit: int = 100) -> list[dict]: ...

    @abc.abstractmethod
    async def latest_checkpoint_id(self, thread_id: str) -> str | None: ...

    @abc.abstractmethod
    async def prune_checkpoints(self, thread_id: str, keep: int) -> int:
        """Delete all but the newest ``keep`` root checkpoints of a thread, and in subgraph
        namespaces what is older than the oldest of them (``history.prune_plan``); returns how
        many checkpoints went."""

    @abc.abstractmethod
    async def is_empty(self) -> bool:
        """No checkpoint and no inbox row yet (restore refuses anything else)."""

    @abc.abstractmethod
    async def _acquire(self, name: str, wait: float | None) -> bool:
        """Take lock ``name``; ``wait`` None blocks, 0 tries once; False if not taken."""

    @abc.abstractmethod
    async def _release(self, name: str) -> None: ...

    async def _renew(self, name: str) -> bool:
        """Renew the lease on held lock ``name`` (see ``state.backends.lease``): True renewed,
        False lost for good; raises if the database cannot be asked. A lock that cannot
        lapse (one process's memory) is always renewed."""
        return True

    @property
    def leases(self) -> Leases:
        """The locks this backend holds, each a lease renewed in the background."""
        if self._leases is None:
            self._leases = Leases(self.failover_s, self._renew)
        return self._leases

    _leases: Leases | None = None

    async def drop_leases(self) -> None:
        """Stop renewing every lock (``aclose`` calls it before it releases them)."""
        if self._leases is not None:
            await self._leases.drop_all()

    async def holds(self, name: str) -> bool:
        """Whether this process still holds lock ``name``: renews its lease now; False once it
        lapsed (no renewal within the lease: a stopped process, a cut network), was taken
        over, or went with its database session (server restart)."""
        return await self.leases.renew(name)

    @asynccontextmanager
    async def _hold(self, name: str, wait: float | None, busy: str) -> AsyncIterator[None]:
        if not await self._acquire(name, wait):
            raise LockBusy(busy)
        self.leases.held(name)
        try:
            yield
        finally:
            await self.leases.dropped(name)
            await self._release(name)

    def fold_lock(self, wait: float | None = None):
        """One writer of the state per database (folds and ticks); LockBusy if not in time."""
        return self._hold("fold", wait, f"another process is folding or ticking on {self.where}")

    def leader_lock(self, wait: float | None = None):
        """One scheduler per database: the holder ticks, others stand by to take over."""
        return self._hold("leader", wait, f"another scheduler is running on {self.where}")

    def sender_lock(self, wait: float | None = None):
        """One alert sender per database (``bga alerts run``, ``graph.alerts``)."""
        return self._hold("alerts", wait, f"another alert sender is running on {self.where}")

    def agent_lock(self, agent_id: str, wait: float | None = None):
        """One process at a time steps an agent: a worker holds it while it runs the agent, a
        tick's ``run_agent`` for the length of one step (and skips the agent if it is busy)."""
        return self._hold(f"agent-{agent_id}", wait,
                          f"agent {agent_id} is running in another process on {self.where}")

    @abc.abstractmethod
    async def aclose(self) -> None: ...
