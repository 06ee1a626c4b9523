"""Ephemeral in-process backend (``memory://name``) for notebooks and unit tests.

Instances opened with the same URL in one process share one store, so a producer and a
reader see each other as they would on a real database. The alert outbox
(``outbox()``) keeps its tables in an in-process SQLite database per URL (the same SQL as on
a file), made by the state migrations.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field

from langgraph.checkpoint.memory import InMemorySaver

from state.backends.aiodb import SqliteAsyncDb
from state.backends.base import Backend, InboxWrite
from state.backends.history import DELTA_METADATA_KEYS, prune_plan, refuse_delta
from state.backends.migrations import STATE, migrate
from state.backends.outbox import OutboxStore, SqlOutboxStore
from state.backends.syncdb import SqliteSyncDb
from state.backends.traces import MemoryTraceStore
from state.backends.url import parse_url
from state.fold import InboxRow, Quarantined


@dataclass
class _Store:
    saver: InMemorySaver = field(default_factory=InMemorySaver)
    inbox: dict[tuple[int, int], InboxRow] = field(default_factory=dict)
    quarantine: list[dict] = field(default_factory=list)
    next_stream: int = 1
    last_seq: dict[int, int] = field(default_factory=dict)
    locks: set[str] = field(default_factory=set)


_STORES: dict[str, _Store] = {}


class MemoryBackend(Backend):
    def __init__(self, url: str) -> None:
        if parse_url(url).dialect != "memory":
            raise ValueError(f"not a memory URL: {url!r}")
        self.url = url
        self._store = _STORES.setdefault(url, _Store())
        self.checkpointer = self._store.saver
        self._holding: set[str] = set()
        self._outbox: tuple[OutboxStore, sqlite3.Connection] | None = None

    async def setup(self, *, create: bool = True, read_only: bool = False) -> None:
        return None

    def traces(self) -> MemoryTraceStore:
        return MemoryTraceStore(self.url)

    def outbox(self) -> OutboxStore:
        """The alert outbox in the in-process SQLite database of this URL, on a connection of
        this backend's (the database lives as long as the process)."""
        if self._outbox is None:
            name = parse_url(self.url).name or "default"
            db = SqliteSyncDb.open(f"file:bga-outbox-{name}?mode=memory&cache=shared")
            try:
                migrate(db, STATE)
            except BaseException:
                db.close()
                raise
            self._outbox = SqlOutboxStore(SqliteAsyncDb(db.conn, asyncio.Lock())), db.conn
        return self._outbox[0]

    async def open_stream(self, producer: str) -> int:
        stream = self._store.next_stream
        self._store.next_stream += 1
        return stream

    async def close_stream(self, stream: int) -> None:
        return None

    async def append(self, stream: int, rows: Sequence[InboxWrite]) -> None:
        keys = [(stream, seq) for seq, _, _ in rows]
        if any(k in self._store.inbox for k in keys):
            raise ValueError("duplicate inbox sequence number")
        for seq, kind, payload in rows:
            self._store.inbox[(stream, seq)] = InboxRow(stream, seq, kind, payload)
        if rows:
            self._store.last_seq[stream] = rows[-1][0]

    async def committed_seq(self, stream: int) -> int:
        return self._store.last_seq.get(stream, 0)

    async def read_inbox(self, limit: int, after: tuple[int, int] = (0, 0)) -> list[InboxRow]:
        keys = sorted(k for k in self._store.inbox if k > after)[:limit]
        return [self._store.inbox[k] for k in keys]

    async def inbox_heads(self) -> dict[int, int]:
        heads: dict[int, int] = {}
        for stream, seq in self._store.inbox:
            heads[stream] = max(seq, heads.get(stream, 0))
        return heads

    async def delete_folded(self, marks: dict[int, int]) -> None:
        for key in [k for k in self._store.inbox if k[1] <= marks.get(k[0], 0)]:
            del self._store.inbox[key]

    async def pending_count(self) -> int:
        return len(self._store.inbox)

    async def quarantine(self, items: Sequence[Quarantined], at: float) -> None:
        self._store.quarantine.extend(
            {"stream": q.row.stream, "seq": q.row.seq, "kind": q.row.kind, "reason": q.reason,
             "at": at} for q in items)

    async def quarantined(self, limit: int = 100) -> list[dict]:
        return list(reversed(self._store.quarantine))[:limit]

    async def latest_checkpoint_id(self, thread_id: str) -> str | None:
        ids = list(self._store.saver.storage.get(thread_id, {}).get("", {}))
        return max(ids) if ids else None

    async def prune_checkpoints(self, thread_id: str, keep: int) -> int:
        """The retention prune (``prune_plan``) on InMemorySaver's dicts, with the writes and
        blobs only the pruned checkpoints used."""
        saver = self._store.saver
        namespaces = saver.storage.get(thread_id, {})
        meta = {(ns, cid): saver.serde.loads_typed(m)
                for ns, cps in namespaces.items() for cid, (_, m, _) in cps.items()}
        if any(k in m for m in meta.values() for k in DELTA_METADATA_KEYS):
            refuse_delta([thread_id])
        doomed, _ = prune_plan([(ns, cid, (m.get("parents") or {}).get(""))
                                for (ns, cid), m in meta.items()], keep, history=True)
        gone = set(doomed)
        for ns, cid in doomed:
            del namespaces[ns][cid]
            saver.writes.pop((thread_id, ns, cid), None)
        for ns, cps in namespaces.items():
            for cid, (c, m, parent) in list(cps.items()):
                if (ns, parent) in gone:
                    cps[cid] = (c, m, None)
        used = {(ns, ch, v) for ns, cps in namespaces.items() for (c, _, _) in cps.values()
                for ch, v in saver.serde.loads_typed(c)["channel_versions"].items()}
        for key in [k for k in saver.blobs if k[0] == thread_id and k[1:] not in used]:
            del saver.blobs[key]
        return len(doomed)

    async def is_empty(self) -> bool:
        # InMemorySaver's storage is a defaultdict that a mere read fills with empty entries.
        storage = self._store.saver.storage
        has_checkpoint = any(cps for ns in storage.values() for cps in ns.values())
        return not has_checkpoint and not self._store.inbox

    async def _acquire(self, name: str, wait: float | None) -> bool:
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while name in self._store.locks:
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        self._store.locks.add(name)
        self._holding.add(name)
        return True

    async def _release(self, name: str) -> None:
        if name in self._holding:
            self._holding.discard(name)
            self._store.locks.discard(name)

    async def aclose(self) -> None:
        for name in list(self._holding):
            await self._release(name)
        if self._outbox is not None:
            self._outbox[1].close()
            self._outbox = None
