"""Redis backend (``redis://host:port/db`` or ``rediss://`` for TLS, ``?prefix=name`` optional).

Plain Redis (no modules), through redis-py's asyncio client. Every key of one state lives
under ``bga:<db>:<prefix>:`` (``DatabaseUrl.key_prefix``), so several states (and tests) share
one server in isolated namespaces; ``RedisBackend.drop_everything`` deletes one.

- **Checkpoints**: ``CasRedisSaver``, a saver of our own (LangGraph's ``langgraph-checkpoint-redis``
  needs the RedisJSON and RediSearch modules, which a plain Redis server lacks; see README,
  "Storage"). Each put is one Lua script: on a linear thread (``state.backends.history``) the
  script compares the thread's newest root checkpoint with the writer's parent and refuses a
  fork (``ForkRefused``) atomically with the write.
- **Inbox**: one Redis stream per inbox stream (``inbox:<stream>``) whose entry ids are
  ``0-<seq>``: an append is one Lua script that checks the sequence numbers, adds every entry
  and records the stream's ``committed_seq``, all or nothing. Within a stream entries are in
  sequence order and a batch appears at once, so the fold's per-stream watermarks see every
  event exactly once (the commit-order argument of ``state.backends.postgres``).
  ``delete_folded`` trims each stream below its mark (``XTRIM MINID``).
- **Locks**: leases (``state.backends.lease``): ``SET NX PX`` of ``<client id>:<token>``, the
  token from a per-lock counter (a fence: renewal and release compare it). The lease lapses
  unless renewed; a holder whose Redis connection is gone (a killed process) is taken over at
  once, since a standby checks the holder's client id with ``CLIENT LIST ID``.
- **Trace store**: ``RedisTraceStore``, a sorted set by sequence number.
- **Alert outbox**: ``RedisOutboxStore``, the same methods and semantics as the SQL tables'
  store (its own implementation: hashes and sorted sets, each multi-key step one Lua script).

Durability: ``setup`` reads ``CONFIG GET appendonly/appendfsync/save`` and logs one warning when
nothing reaches the disk (``durability``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import orjson
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from state.backends import traces as _traces
from state.backends.base import Backend, InboxWrite
from state.backends.history import (
    DELTA_METADATA_KEYS,
    LinearThreads,
    check_strategy,
    prune_plan,
    refuse_delta,
)
from state.backends.lease import lease_s, poll
from state.backends.migrations import SchemaNotReady
from state.backends.outbox import (
    KEEP_MESSAGES,
    KEEP_S,
    PENDING,
    OutboxStore,
    history_event,
    status_after,
)
from state.backends.syncdb import CONNECT_TIMEOUT_S
from state.backends.traces import (
    KEEP_ROWS,
    QUARANTINE_COLUMNS,
    QuarantinedRecord,
    TraceStore,
    _quarantine_values,
    _row_dict,
    _row_values,
)
from state.backends.url import parse_url
from state.fold import InboxRow, Quarantined
from state.redact import redact

log = logging.getLogger("bga.redis")

# redis-py's annotations mix its sync and async return types (``Awaitable[T] | T``, bytes or
# str by decode mode), which mypy cannot narrow: clients are typed Any here (bytes replies).
Client = Any


REPLY_TIMEOUT_S = 60.0  # redis-py's default (5 s) fails a 50k-entry inbox read on a loaded host;
# lock renewals have their own bound (half a lease, ``RedisBackend._renew``)


def connect(url: str, **kwargs: Any) -> Client:
    """A redis-py asyncio client for a ``redis://`` / ``rediss://`` state URL (its query,
    such as ``?prefix=``, is ours, not the client's)."""
    return aioredis.Redis.from_url(url.split("?", 1)[0], socket_connect_timeout=CONNECT_TIMEOUT_S,
                                   socket_timeout=REPLY_TIMEOUT_S, health_check_interval=0,
                                   **kwargs)


class Keys:
    """Key names of one state: ``prefix`` then a kind and URL-quoted parts (a thread id or a
    namespace may hold any character, ``:`` included)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __call__(self, kind: str, *parts: Any) -> str:
        return ":".join([self.prefix + kind, *(quote(str(p), safe="") for p in parts)])


# -- durability --------------------------------------------------------------------------------


def durability(config: dict[str, str]) -> str | None:
    """What a server with ``config`` (``CONFIG GET appendonly``, ``appendfsync``, ``save``)
    may lose, as one warning line; None when every acknowledged write is fsynced (AOF with
    ``appendfsync always``)."""
    aof = config.get("appendonly", "no") == "yes"
    fsync = config.get("appendfsync", "everysec")
    save = config.get("save", "").strip()
    if aof and fsync == "always":
        return None
    if aof:
        bound = "about the last second" if fsync == "everysec" else "up to ~30 s (OS flush)"
        return (f"Redis persistence is AOF with appendfsync {fsync}: a server crash or power "
                f"loss can lose {bound} of acknowledged writes (events, checkpoints); set "
                "appendfsync always to lose none")
    if save:
        return (f"Redis persistence is RDB snapshots only (save {save!r}): a server crash loses "
                "every write since the last snapshot (events, checkpoints, locks); set "
                "appendonly yes with appendfsync always (or everysec: ~1 s at risk)")
    return ("Redis persistence is off (appendonly no, no save points): a server restart loses "
            "the whole state (events, checkpoints, history, locks); set appendonly yes with "
            "appendfsync always to keep every acknowledged write")


# -- checkpoints -------------------------------------------------------------------------------

# KEYS: cp, meta, parents, index, namespaces, threads, runs(optional)
# ARGV: checkpoint id, checkpoint, metadata, parent ("" none), namespace, thread, cas (1/0)
_PUT = """
if ARGV[7] == '1' then
  local top = redis.call('ZREVRANGEBYLEX', KEYS[4], '+', '-', 'LIMIT', 0, 1)[1]
  if top and top ~= ARGV[4] then return {0, top} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
else redis.call('HDEL', KEYS[3], ARGV[1]) end
redis.call('ZADD', KEYS[4], 0, ARGV[1])
redis.call('SADD', KEYS[5], ARGV[5])
redis.call('SADD', KEYS[6], ARGV[6])
if KEYS[7] then redis.call('SADD', KEYS[7], cjson.encode({ARGV[6], ARGV[5], ARGV[1]})) end
return {1, ''}
"""


def _pack(type_: str, blob: bytes) -> bytes:
    return type_.encode() + b"\x00" + blob


def _unpack(value: bytes) -> tuple[str, bytes]:
    type_, _, blob = value.partition(b"\x00")
    return type_.decode(), blob


class CasRedisSaver(LinearThreads, BaseCheckpointSaver[str]):
    """A LangGraph checkpointer over plain Redis, with compare-and-swap on the linear threads
    and the optional methods ``langgraph dev`` uses (adelete_for_runs, acopy_thread, aprune).

    Per thread and namespace: hashes of checkpoints (``type NUL bytes``), metadata (JSON, as
    the SQLite saver keeps it) and parent ids by checkpoint id, a sorted set of the ids
    (lexicographic: ids are time-ordered), and per checkpoint a hash of its pending writes.
    Sets list each thread's namespaces and writes hashes, every thread and each run's
    checkpoints. Async first, like the serving code that uses it; the sync methods run the
    async ones on the saver's loop from another thread (as ``AsyncSqliteSaver`` does)."""

    def __init__(self, client: Client, keys: Keys) -> None:
        super().__init__()
        self.client = client
        self.k = keys
        self._put = client.register_script(_PUT)
        self.loop = asyncio.get_running_loop()

    # -- keys --
    def _ns_keys(self, thread_id: str, ns: str) -> tuple[str, str, str, str]:
        return (self.k("cp", thread_id, ns), self.k("meta", thread_id, ns),
                self.k("par", thread_id, ns), self.k("ix", thread_id, ns))

    def _writes_key(self, thread_id: str, ns: str, checkpoint_id: str) -> str:
        return self.k("wr", thread_id, ns, checkpoint_id)

    # -- versions (as InMemorySaver: sortable strings) --
    def get_next_version(self, current: str | None, channel: None) -> str:
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- reads --
    async def _tuple(self, thread_id: str, ns: str, checkpoint_id: str,
                     ) -> CheckpointTuple | None:
        cp, meta, par, _ = self._ns_keys(thread_id, ns)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(cp, checkpoint_id).hget(meta, checkpoint_id).hget(par, checkpoint_id)
            pipe.hgetall(self._writes_key(thread_id, ns, checkpoint_id))
            raw, raw_meta, parent, writes = await pipe.execute()
        if raw is None:
            return None
        checkpoint = self.serde.loads_typed(_unpack(raw))
        pending = []
        for value in writes.values():
            header, _, blob = value.partition(b"\x00")
            task_id, channel, type_, task_path, idx = json.loads(header)
            pending.append(((task_path, task_id, idx),
                            (task_id, channel, self.serde.loads_typed((type_, blob)))))
        parent_id = parent.decode() if parent else None
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                     "checkpoint_id": checkpoint_id}},
            checkpoint=checkpoint,
            metadata=json.loads(raw_meta) if raw_meta else {},
            parent_config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                            "checkpoint_id": parent_id}} if parent_id else None,
            pending_writes=[w for _, w in sorted(pending, key=lambda p: p[0])],
        )

    async def _ids(self, thread_id: str, ns: str, before: str | None = None,
                   limit: int | None = None) -> list[str]:
        top = f"({before}" if before else "+"
        args: dict[str, Any] = {"start": 0, "num": limit} if limit is not None else {}
        ids = await self.client.zrevrangebylex(self.k("ix", thread_id, ns), top, "-", **args)
        return [i.decode() for i in ids]

    async def _namespaces(self, thread_id: str) -> list[str]:
        return sorted(n.decode() for n in await self.client.smembers(self.k("ns", thread_id)))

    async def _threads(self) -> list[str]:
        return sorted(t.decode() for t in await self.client.smembers(self.k("threads")))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            ids = await self._ids(thread_id, ns, limit=1)
            if not ids:
                return None
            checkpoint_id = ids[0]
        return await self._tuple(thread_id, ns, checkpoint_id)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None,
                    ) -> AsyncIterator[CheckpointTuple]:
        conf = (config or {}).get("configurable", {})
        threads = [str(conf["thread_id"])] if conf.get("thread_id") else await self._threads()
        before_id = get_checkpoint_id(before) if before else None
        wanted = conf.get("checkpoint_id")
        for thread_id in threads:
            namespaces = ([conf["checkpoint_ns"]] if "checkpoint_ns" in conf
                          else await self._namespaces(thread_id))
            for ns in namespaces:
                ids = [wanted] if wanted else await self._ids(thread_id, ns, before_id)
                if wanted and before_id and wanted >= before_id:
                    continue
                metas = await self.client.hmget(self.k("meta", thread_id, ns), ids) if ids else []
                for checkpoint_id, raw_meta in zip(ids, metas, strict=True):
                    if raw_meta is None:
                        continue
                    if filter and not _matches(json.loads(raw_meta), filter):
                        continue
                    if limit is not None and limit <= 0:
                        return
                    found = await self._tuple(thread_id, ns, checkpoint_id)
                    if found is None:
                        continue
                    if limit is not None:
                        limit -= 1
                    yield found

    # -- writes --
    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint,
                   metadata: CheckpointMetadata, new_versions: ChannelVersions) -> RunnableConfig:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        parent = conf.get("checkpoint_id") or ""
        meta = get_checkpoint_metadata(config, metadata)
        run_id = meta.get("run_id")
        keys = [*self._ns_keys(thread_id, ns), self.k("ns", thread_id), self.k("threads")]
        if run_id:
            keys.append(self.k("run", run_id))
        cas = not ns and self.is_linear(thread_id)
        ok, top = await self._put(keys=keys, args=[
            checkpoint["id"], _pack(*self.serde.dumps_typed(checkpoint)),
            json.dumps(meta, ensure_ascii=False).encode("utf-8", "ignore"), parent, ns,
            thread_id, "1" if cas else "0"])
        if not ok:
            self.check_parent(thread_id, top.decode(), parent or None)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                          task_id: str, task_path: str = "") -> None:
        conf = config["configurable"]
        thread_id, ns = str(conf["thread_id"]), conf.get("checkpoint_ns", "")
        key = self._writes_key(thread_id, ns, conf["checkpoint_id"])
        async with self.client.pipeline(transaction=True) as pipe:
            # every writes hash of the thread, so that writes of a checkpoint never saved
            # can go too (``_prune``, ``adelete_thread``)
            pipe.sadd(self.k("wk", thread_id), json.dumps([ns, conf["checkpoint_id"]]))
            for idx, (channel, value) in enumerate(writes):
                w_idx = WRITES_IDX_MAP.get(channel, idx)
                type_, blob = self.serde.dumps_typed(value)
                field = f"{task_id}\x00{w_idx}"
                packed = json.dumps([task_id, channel, type_, task_path, w_idx]).encode() \
                    + b"\x00" + blob
                if w_idx >= 0:
                    pipe.hsetnx(key, field, packed)
                else:
                    pipe.hset(key, field, packed)
            await pipe.execute()

    # -- deletes, copies, prunes --
    async def _delete(self, thread_id: str, doomed: Sequence[tuple[str, str]]) -> None:
        """Delete checkpoints ``(namespace, id)`` of a thread with their writes; a kept
        checkpoint whose parent went has none now."""
        if not doomed:
            return
        gone: dict[str, set[str]] = {}
        for ns, checkpoint_id in doomed:
            gone.setdefault(ns, set()).add(checkpoint_id)
        for ns, ids in gone.items():
            cp, meta, par, ix = self._ns_keys(thread_id, ns)
            parents = await self.client.hgetall(par)
            orphans = [c for c, p in parents.items() if p.decode() in ids]
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(cp, *ids).hdel(meta, *ids).hdel(par, *ids).zrem(ix, *ids)
                if orphans:
                    pipe.hdel(par, *orphans)
                pipe.delete(*(self._writes_key(thread_id, ns, i) for i in ids))
                await pipe.execute()

    async def adelete_thread(self, thread_id: str) -> None:
        thread_id = str(thread_id)
        namespaces = await self._namespaces(thread_id)
        doomed: list[str] = [self.k("ns", thread_id), self.k("wk", thread_id)]
        for ns in namespaces:
            doomed += list(self._ns_keys(thread_id, ns))
        doomed += [self._writes_key(thread_id, ns, i)
                   for ns, i in await self._write_keys(thread_id)]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*doomed).srem(self.k("threads"), thread_id)
            await pipe.execute()

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that runs ``run_ids`` made, on every
        thread but a linear one (``langgraph dev`` calls this to roll a cancelled run back)."""
        for run_id in [str(r) for r in run_ids]:
            key = self.k("run", run_id)
            rows = [tuple(json.loads(m)) for m in await self.client.smembers(key)]
            by_thread: dict[str, list[tuple[str, str]]] = {}
            for thread_id, ns, checkpoint_id in self.spare_linear(rows):
                by_thread.setdefault(thread_id, []).append((ns, checkpoint_id))
            for thread_id, doomed in by_thread.items():
                await self._delete(thread_id, doomed)
            await self.client.delete(key)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread, in all namespaces, to another thread
        (metadata ``thread_id`` renamed); a linear thread cannot be the target."""
        source, target = str(source_thread_id), str(target_thread_id)
        self.refuse_copy_into(target)
        for ns in await self._namespaces(source):
            src, dst = self._ns_keys(source, ns), self._ns_keys(target, ns)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(src[0]).hgetall(src[1]).hgetall(src[2]).zrange(src[3], 0, -1)
                cps, metas, parents, ids = await pipe.execute()
            runs: list[tuple[str, str]] = []
            for cid, raw in metas.items():
                meta = json.loads(raw)
                if "thread_id" in meta:
                    meta["thread_id"] = target
                if meta.get("run_id"):
                    runs.append((str(meta["run_id"]), cid.decode()))
                metas[cid] = json.dumps(meta, ensure_ascii=False).encode("utf-8", "ignore")
            async with self.client.pipeline(transaction=True) as pipe:
                for run_id, cid in runs:
                    pipe.sadd(self.k("run", run_id), json.dumps([target, ns, cid]))
                for key, mapping in ((dst[0], cps), (dst[1], metas), (dst[2], parents)):
                    if mapping:
                        pipe.hset(key, mapping=mapping)
                if ids:
                    pipe.zadd(dst[3], dict.fromkeys(ids, 0))
                for cid in ids:
                    pipe.copy(self._writes_key(source, ns, cid.decode()),
                              self._writes_key(target, ns, cid.decode()), replace=True)
                    pipe.sadd(self.k("wk", target), json.dumps([ns, cid.decode()]))
                pipe.sadd(self.k("ns", target), ns).sadd(self.k("threads"), target)
                await pipe.execute()

    async def _rows(self, thread_id: str) -> list[tuple[str, str, str | None, dict]]:
        """(namespace, id, root checkpoint, metadata) of every checkpoint of a thread."""
        rows = []
        for ns in await self._namespaces(thread_id):
            for cid, raw in (await self.client.hgetall(self.k("meta", thread_id, ns))).items():
                meta = json.loads(raw)
                rows.append((ns, cid.decode(), (meta.get("parents") or {}).get(""), meta))
        return rows

    async def _prune(self, thread_id: str, keep: int, *, history: bool) -> int:
        rows = await self._rows(thread_id)
        if any(k in meta for *_, meta in rows for k in DELTA_METADATA_KEYS):
            refuse_delta([thread_id])
        doomed, cutoff = prune_plan([r[:3] for r in rows], keep, history=history)
        await self._delete(thread_id, doomed)
        if history and cutoff is not None:  # writes whose checkpoint was never saved
            saved = {(ns, i) for ns, i, *_ in rows}
            orphans = [(ns, i) for ns, i in await self._write_keys(thread_id)
                       if i < cutoff and (ns, i) not in saved]
            if orphans:
                await self.client.delete(*(self._writes_key(thread_id, ns, i)
                                           for ns, i in orphans))
        return len(doomed)

    async def _write_keys(self, thread_id: str) -> list[tuple[str, str]]:
        """(namespace, checkpoint id) of every writes hash of a thread still there; the
        index forgets the others."""
        index = self.k("wk", thread_id)
        entries = [(m, tuple(json.loads(m))) for m in await self.client.smembers(index)]
        if not entries:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for _, (ns, i) in entries:
                pipe.exists(self._writes_key(thread_id, ns, i))
            there = await pipe.execute()
        gone = [m for (m, _), ok in zip(entries, there, strict=True) if not ok]
        if gone:
            await self.client.srem(index, *gone)
        return [key for (_, key), ok in zip(entries, there, strict=True) if ok]

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest``: keep the newest checkpoint of every namespace (a subgraph call
        goes with the root checkpoint it started from); ``delete``: delete the threads."""
        thread_ids = check_strategy(thread_ids, strategy)
        if strategy == "delete":
            for thread_id in thread_ids:
                await self.adelete_thread(thread_id)
            return
        delta = [t for t in thread_ids
                 if any(k in m for *_, m in await self._rows(t) for k in DELTA_METADATA_KEYS)]
        refuse_delta(delta)
        for thread_id in thread_ids:
            await self._prune(thread_id, 1, history=False)

    async def aprune_history(self, thread_id: str, keep: int) -> int:
        """The retention prune (see ``prune_plan``); returns how many checkpoints went. Only
        checkpoints older than the newest go, so a concurrent compare-and-swap put is safe."""
        return await self._prune(str(thread_id), keep, history=True)

    # -- sync methods: the async ones on the saver's loop, from another thread --
    def _sync(self, coro: Any) -> Any:
        try:
            if asyncio.get_running_loop() is self.loop:
                coro.close()
                raise asyncio.InvalidStateError(
                    "synchronous calls to CasRedisSaver are only allowed from a thread other "
                    "than its event loop's; use the async methods (ainvoke, aget_state)")
        except RuntimeError:
            pass
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None,
             ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before,
                                                limit=limit)]
        yield from self._sync(collect())

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]],
                   task_id: str, task_path: str = "") -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))


def _matches(meta: dict[str, Any], filter: dict[str, Any]) -> bool:
    return all(meta.get(k) == v for k, v in filter.items())


# -- inbox -------------------------------------------------------------------------------------

# KEYS: stream, last (hash), live (zset); ARGV: stream id, then (seq, kind, payload) triples
_APPEND = """
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local prev = last
for i = 2, #ARGV, 3 do
  local seq = tonumber(ARGV[i])
  if seq <= prev then return redis.error_reply('BGA duplicate inbox sequence number ' ..
    ARGV[i] .. ' in stream ' .. ARGV[1] .. ' (committed up to ' .. last .. ')') end
  prev = seq
end
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'k', ARGV[i + 1], 'p', ARGV[i + 2])
end
redis.call('HSET', KEYS[2], ARGV[1], prev)
redis.call('ZADD', KEYS[3], tonumber(ARGV[1]), ARGV[1])
return prev
"""

# KEYS: stream, live; ARGV: stream id, mark
_TRIM = """
redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. (tonumber(ARGV[2]) + 1))
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: live; ARGV: prefix of the stream keys
_PENDING = """
local n = 0
for _, s in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('XLEN', ARGV[1] .. s)
end
return n
"""

# KEYS: live; ARGV: prefix of the stream keys -> flat [stream, head seq, ...]
_HEADS = """
local out = {}
for _, s in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local last = redis.call('XREVRANGE', ARGV[1] .. s, '+', '-', 'COUNT', 1)[1]
  if last then table.insert(out, s); table.insert(out, last[1]) end
end
return out
"""

# KEYS: lock, counter; ARGV: holder prefix, lease ms, holder value seen ('' none)
_TAKE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[3] then return false end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. ':' .. token
redis.call('SET', KEYS[1], value, 'PX', tonumber(ARGV[2]))
return value
"""

# KEYS: lock; ARGV: value, lease ms (renew) or '' (release)
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 1
"""


class RedisBackend(Backend):

    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        if parsed.dialect != "redis":
            raise ValueError(f"not a Redis URL: {redact(url)!r}")
        self.url = url
        self.k = Keys(parsed.key_prefix)
        self._client: Client | None = None
        self._locks: Client | None = None  # one connection: its client id is the holder's
        self._lock_id = ""
        self._held: dict[str, str] = {}  # lock name -> the value we SET
        self.checkpointer: CasRedisSaver
        self._outbox: RedisOutboxStore | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("Redis backend used before setup() or once closed")
        return self._client

    async def setup(self, *, create: bool = True, read_only: bool = False) -> None:
        self._client = connect(self.url)
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            await self.aclose()
            raise ConnectionError(f"cannot connect to Redis at {self.where}: {exc}") from exc
        try:
            if not create or read_only:
                if not await self._client.exists(self.k("created")):
                    raise SchemaNotReady(f"no state database at {self.where} (nothing under "
                                         f"key prefix {self.k.prefix!r}; open it once for "
                                         "writing: bga db upgrade --db ...)")
            else:
                await self._client.setnx(self.k("created"), str(time.time()))
            self.checkpointer = CasRedisSaver(self._client, self.k)
            self._append = self._client.register_script(_APPEND)
            self._trim = self._client.register_script(_TRIM)
            self._pending = self._client.register_script(_PENDING)
            self._heads = self._client.register_script(_HEADS)
            self._take = self._client.register_script(_TAKE)
            self._renew_script = self._client.register_script(_RENEW)
            await self._warn_durability()
        except BaseException:
            await self.aclose()
            raise

    _warned: ClassVar[set[str]] = set()  # one warning per server and process

    async def _warn_durability(self) -> None:
        try:
            config: dict[str, str] = {}
            for name in ("appendonly", "appendfsync", "save"):
                got = await self.client.config_get(name)
                config.update({_text(k): _text(v) for k, v in got.items()})
        except ResponseError:  # CONFIG renamed or disabled (managed Redis): say we cannot tell
            config = {"unknown": "yes"}
        line = ("cannot read the Redis persistence settings (CONFIG GET refused): what a server "
                "crash can lose is unknown" if "unknown" in config else durability(config))
        server = self.where.split("?", 1)[0]
        if line and server not in RedisBackend._warned:
            RedisBackend._warned.add(server)
            log.warning("%s (%s)", line, server)

    def traces(self) -> RedisTraceStore:
        return RedisTraceStore(self.url, client=self.client)

    def outbox(self) -> RedisOutboxStore:
        """The alert outbox on this backend's client (used after ``setup()``)."""
        if self._outbox is None:
            self._outbox = RedisOutboxStore(lambda: self.client, self.k)
        return self._outbox

    # -- inbox ---------------------------------------------------------------------------------
    def _stream_key(self, stream: int | str) -> str:
        return self.k("inbox", stream)

    async def open_stream(self, producer: str) -> int:
        stream = int(await self.client.incr(self.k("next_stream")))
        await self.client.hset(self.k("stream", stream), mapping={
            "producer": producer, "host": socket.gethostname(), "pid": os.getpid(),
            "opened_at": time.time()})
        return stream

    async def close_stream(self, stream: int) -> None:
        await self.client.hset(self.k("stream", stream), "closed_at", time.time())

    async def append(self, stream: int, rows: Sequence[InboxWrite]) -> None:
        if not rows:
            return
        args: list[Any] = [stream]
        for seq, kind, payload in rows:
            args += [int(seq), kind, payload]
        try:
            await self._append(keys=[self._stream_key(stream), self.k("last"), self.k("live")],
                               args=args)
        except ResponseError as exc:
            if "BGA duplicate" in str(exc):
                raise ValueError(str(exc).replace("BGA ", "", 1)) from None
            raise

    async def committed_seq(self, stream: int) -> int:
        # a script runs whole or not at all: no append is ever half-visible here
        return int(await self.client.hget(self.k("last"), str(stream)) or 0)

    async def read_inbox(self, limit: int, after: tuple[int, int] = (0, 0)) -> list[InboxRow]:
        out: list[InboxRow] = []
        streams = await self.client.zrangebyscore(self.k("live"), after[0], "+inf")
        for raw in streams:
            if len(out) >= limit:
                break
            stream = int(raw)
            start = f"(0-{after[1]}" if stream == after[0] and after[1] else "-"
            entries = await self.client.xrange(self._stream_key(stream), start, "+",
                                               count=limit - len(out))
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-")[1])
                out.append(InboxRow(stream, seq, fields[b"k"].decode(), bytes(fields[b"p"])))
        return out

    async def inbox_heads(self) -> dict[int, int]:
        """Each stream's newest entry id, in one script (one consistent view)."""
        flat = await self._heads(keys=[self.k("live")], args=[self.k("inbox") + ":"])
        return {int(flat[i]): int(flat[i + 1].split(b"-")[1]) for i in range(0, len(flat), 2)}

    async def delete_folded(self, marks: dict[int, int]) -> None:
        for stream, mark in marks.items():
            await self._trim(keys=[self._stream_key(stream), self.k("live")], args=[stream, mark])

    async def pending_count(self) -> int:
        return int(await self._pending(keys=[self.k("live")], args=[self.k("inbox") + ":"]))

    async def quarantine(self, items: Sequence[Quarantined], at: float) -> None:
        if items:
            await self.client.lpush(self.k("quarantine"), *(orjson.dumps({
                "stream": q.row.stream, "seq": q.row.seq, "kind": q.row.kind,
                "reason": q.reason, "at": at,
                "payload": q.row.payload if isinstance(q.row.payload, str)
                else q.row.payload.decode("utf-8", "replace")}) for q in items))

    async def quarantined(self, limit: int = 100) -> list[dict]:
        rows = [orjson.loads(r) for r in await self.client.lrange(self.k("quarantine"), 0,
                                                                    max(limit, 1) - 1)]
        return [{k: r[k] for k in ("stream", "seq", "kind", "reason", "at")} for r in rows]

    # -- checkpoints ---------------------------------------------------------------------------
    async def latest_checkpoint_id(self, thread_id: str) -> str | None:
        ids = await self.checkpointer._ids(str(thread_id), "", limit=1)
        return ids[0] if ids else None

    async def prune_checkpoints(self, thread_id: str, keep: int) -> int:
        return await self.checkpointer.aprune_history(thread_id, keep)

    async def is_empty(self) -> bool:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.scard(self.k("threads")).zcard(self.k("live"))
            threads, live = await pipe.execute()
        return not threads and not live

    # -- locks ---------------------------------------------------------------------------------
    async def _lock_client(self) -> Client:
        """The connection the locks' values name (``CLIENT ID``): while it is open, a lock it
        holds lapses only when not renewed; once it is closed (the process died), a standby
        takes the lock at once."""
        if self._locks is None:
            self._locks = connect(self.url, single_connection_client=True)
            self._lock_id = str(await self._locks.client_id())
        return self._locks

    async def _holder_alive(self, value: bytes) -> bool:
        client_id = value.decode().split(":", 1)[0]
        try:
            return bool((await self.client.execute_command("CLIENT LIST ID", client_id)).strip())
        except ResponseError:  # no such client (or CLIENT disabled): rely on the lease only
            return True

    async def _acquire(self, name: str, wait: float | None) -> bool:
        key, ms = self.k("lock", name), int(lease_s(self.failover_s) * 1000)

        async def attempt() -> bool:
            if name in self._held:  # another task of this process holds it: busy
                return False
            locks = await self._lock_client()
            self._lock_id = str(await locks.client_id())  # a new one after a reconnection
            current = await self.client.get(key)
            seen = b""
            if current is not None:
                if await self._holder_alive(current):
                    return False
                seen = current
            value = await self._take(keys=[key, self.k("locktoken", name)],
                                     args=[self._lock_id, ms, seen], client=locks)
            if not value:
                return False
            self._held[name] = value.decode()
            return True

        return await poll(attempt, wait)

    async def _renew(self, name: str) -> bool:
        value = self._held.get(name)
        if value is None or self._locks is None:
            return False
        async with asyncio.timeout(lease_s(self.failover_s) / 2):
            ok = await self._renew_script(keys=[self.k("lock", name)],
                                          args=[value, int(lease_s(self.failover_s) * 1000)],
                                          client=self._locks)
        if not ok:
            self._held.pop(name, None)
        return bool(ok)

    async def _release(self, name: str) -> None:
        value = self._held.pop(name, None)
        if value is None or self._locks is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._renew_script(keys=[self.k("lock", name)], args=[value, ""],
                                     client=self._locks)

    async def drop_everything(self) -> int:
        """Delete every key of this state (its prefix); how many went. Tests clean up with it."""
        n = 0
        async for batch in _batches(self.client.scan_iter(match=_glob(self.k.prefix) + "*",
                                                          count=1000)):
            n += await self.client.unlink(*batch)
        return n

    async def aclose(self) -> None:
        await self.drop_leases()
        for name in list(self._held):
            await self._release(name)
        for client in (self._locks, self._client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self._locks = self._client = None
        self._outbox = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob(prefix: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in prefix)


async def _batches(items: AsyncIterator[Any], size: int = 500) -> AsyncIterator[list[Any]]:
    batch: list[Any] = []
    async for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- local trace store -------------------------------------------------------------------------

# KEYS: rows (zset), counter; ARGV: each row's stored values (JSON)
_TRACE_APPEND = """
local last = redis.call('INCRBY', KEYS[2], #ARGV)
for i = 1, #ARGV do redis.call('ZADD', KEYS[1], last - #ARGV + i, ARGV[i]) end
return #ARGV
"""


class RedisTraceStore(TraceStore):
    """The local trace store in Redis: rows in a sorted set scored by sequence number (one
    script allocates the numbers and adds the rows, so a reader never sees a gap fill in
    later), the quarantine in a hash by (source, key)."""

    def __init__(self, url: str, *, client: Client | None = None) -> None:
        self.url = url
        self.k = Keys(parse_url(url).key_prefix)
        self._own = client is None
        self._client = client

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    async def append(self, rows: Sequence[dict[str, Any]]) -> int:
        if not rows:
            return 0
        script = self.client.register_script(_TRACE_APPEND)
        return int(await script(keys=[self.k("traces"), self.k("traces_seq")],
                                args=[orjson.dumps(list(_row_values(r))) for r in rows]))

    async def read_after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        got = await self.client.zrangebyscore(self.k("traces"), f"({seq}", "+inf", start=0,
                                              num=limit, withscores=True)
        return [_row_dict((int(score), *orjson.loads(raw))) for raw, score in got]

    async def first_seq(self) -> int | None:
        got = await self.client.zrange(self.k("traces"), 0, 0, withscores=True)
        return int(got[0][1]) if got else None

    async def prune(self, keep_rows: int = KEEP_ROWS) -> int:
        extra = int(await self.client.zcard(self.k("traces"))) - keep_rows
        if extra <= 0:
            return 0
        return int(await self.client.zremrangebyrank(self.k("traces"), 0, extra - 1))

    async def quarantine(self, items: Sequence[QuarantinedRecord], at: float) -> None:
        key = self.k("traces_quarantine")
        for q in items:
            values = dict(zip(QUARANTINE_COLUMNS, _quarantine_values(q, at), strict=True))
            await self.client.hsetnx(key, orjson.dumps([q.source, q.key]), orjson.dumps(values))
        cap = _traces.KEEP_QUARANTINED  # read at call time (tests lower it)
        if await self.client.hlen(key) > cap:
            rows = sorted(((f, orjson.loads(v)) for f, v in
                           (await self.client.hgetall(key)).items()), key=lambda r: -r[1]["at"])
            cutoff = rows[max(cap - 1, 0)][1]["at"]
            old = [f for f, r in rows[cap:] if r["at"] < cutoff]
            if old:
                await self.client.hdel(key, *old)

    async def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = [orjson.loads(v) for v in
                await self.client.hvals(self.k("traces_quarantine"))]
        return sorted(rows, key=lambda r: (-r["at"], r["key"]))[:limit]

    async def aclose(self) -> None:
        if self._own and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()



# -- alert outbox ------------------------------------------------------------------------------

# Keys (under the state's prefix): ``ob_alert`` hash alert key -> JSON (channel, subject, event,
# created_at, payload); ``ob_msgof`` hash alert key -> its message's key; ``ob_wait:<channel>``
# sorted set of a channel's alerts in no message, ``ob_subj:<channel>:<subject>`` of every
# alert about a subject, ``ob_members:<message>`` of a message's alerts (all scored by
# created_at: ties order by key, as the SQL's ``ORDER BY created_at, key``); ``ob_unbatched``
# set of the alerts in no message; ``ob_msg:<message>`` hash of a message's fields,
# ``ob_msgs`` sorted set of messages by created_at, ``ob_due`` of the pending ones by next_at,
# ``ob_status`` hash status -> how many messages.

# KEYS: alerts, msgof, unbatched, then per alert: its wait (or members) set, its subject set
# ARGV: message key ("": none), then per alert: key, created_at, record
_OB_ADD = """
local n = 0
for i = 0, (#ARGV - 1) / 3 - 1 do
  local key, at = ARGV[2 + 3 * i], ARGV[3 + 3 * i]
  if redis.call('HSETNX', KEYS[1], key, ARGV[4 + 3 * i]) == 1 then
    n = n + 1
    redis.call('ZADD', KEYS[4 + 2 * i], at, key)
    redis.call('ZADD', KEYS[5 + 2 * i], at, key)
    if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], key, ARGV[1])
    else redis.call('SADD', KEYS[3], key) end
  end
end
return n
"""

# KEYS: msg, msgs, due, status, alerts, msgof, unbatched, members, wait
# ARGV: key, channel, created_at, alerts, status, attempts, next_at, then the fields
# (name, value pairs) a sent-outside-the-queue message adds, "--", then the alert keys to attach
_OB_MESSAGE = """
local i = 8
local extra = {}
while ARGV[i] ~= '--' do extra[#extra + 1] = ARGV[i]; extra[#extra + 1] = ARGV[i + 1]; i = i + 2 end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'channel', ARGV[2], 'created_at', ARGV[3], 'alerts', ARGV[4],
             'status', ARGV[5], 'attempts', ARGV[6], 'next_at', ARGV[7])
  if #extra > 0 then redis.call('HSET', KEYS[1], unpack(extra)) end
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  if ARGV[5] == 'pending' then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1]) end
  redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
end
for j = i + 1, #ARGV do
  local key = ARGV[j]
  local at = redis.call('ZSCORE', KEYS[9], key)
  if at and redis.call('HEXISTS', KEYS[6], key) == 0 then
    redis.call('HSET', KEYS[6], key, ARGV[1])
    redis.call('ZREM', KEYS[9], key)
    redis.call('SREM', KEYS[7], key)
    redis.call('ZADD', KEYS[8], at, key)
  end
end
return 1
"""

# KEYS: msg, due, status; ARGV: key, status, now, next_at, error ("" none), has error (1/0),
# sent_at ("" none)
_OB_RECORD = """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return 0 end
redis.call('HINCRBY', KEYS[3], old, -1)
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'last_try_at', ARGV[3], 'next_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'last_error', ARGV[5])
else redis.call('HDEL', KEYS[1], 'last_error') end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'sent_at', ARGV[7])
else redis.call('HDEL', KEYS[1], 'sent_at') end
if ARGV[2] == 'pending' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: msg, msgs, due, status, alerts, msgof, members, then each member's subject set
# ARGV: key, then the member alert keys (in KEYS order)
_OB_FORGET = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'pending' then return 0 end
for i = 2, #ARGV do
  redis.call('HDEL', KEYS[5], ARGV[i])
  redis.call('HDEL', KEYS[6], ARGV[i])
  redis.call('ZREM', KEYS[6 + i], ARGV[i])
end
redis.call('DEL', KEYS[1], KEYS[7])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], status, -1)
return 1
"""

_MESSAGE_FLOATS = ("created_at", "next_at", "last_try_at", "sent_at")


class RedisOutboxStore(OutboxStore):
    """The alert outbox in Redis: the same methods and semantics as ``SqlOutboxStore`` (one
    store per interface method, not a shared storage layer: the SQL's queries have no Redis
    spelling), each step that changes more than one key one Lua script, so a killed sender
    leaves every step whole or not done. The keys are described above ``_OB_ADD``."""

    def __init__(self, client_of: Callable[[], Client], keys: Keys) -> None:
        self._client_of = client_of
        self.k = keys
        client = client_of()
        self._add = client.register_script(_OB_ADD)
        self._message = client.register_script(_OB_MESSAGE)
        self._record = client.register_script(_OB_RECORD)
        self._forget = client.register_script(_OB_FORGET)

    @property
    def client(self) -> Client:
        """The backend's client (the store has no connection of its own: closed with it)."""
        return self._client_of()

    def _msg_keys(self, key: str, channel: str) -> list[str]:
        return [self.k("ob_msg", key), self.k("ob_msgs"), self.k("ob_due"), self.k("ob_status"),
                self.k("ob_alert"), self.k("ob_msgof"), self.k("ob_unbatched"),
                self.k("ob_members", key), self.k("ob_wait", channel)]

    async def _add_alerts(self, alerts: Sequence[dict[str, Any]], channel_of: Any, now: float,
                          message: str = "", client: Client | None = None) -> Any:
        """Add the alerts not yet here (by key), in no message or in ``message``; how many
        were new (or, on a pipeline ``client``, the queued call)."""
        keys = [self.k("ob_alert"), self.k("ob_msgof"), self.k("ob_unbatched")]
        args: list[Any] = [message]
        for a in alerts:
            channel = channel_of(a)
            keys += [self.k("ob_members", message) if message else self.k("ob_wait", channel),
                     self.k("ob_subj", channel, a["subject"])]
            args += [a["key"], repr(now), orjson.dumps({
                "channel": channel, "subject": a["subject"], "event": a["event"],
                "created_at": now, "payload": a})]
        return await self._add(keys=keys, args=args, client=client or self.client)

    async def _records(self, keys: Sequence[bytes | str]) -> list[dict[str, Any]]:
        if not keys:
            return []
        raw = await self.client.hmget(self.k("ob_alert"), list(keys))
        return [{"key": _text(k), **orjson.loads(r)} for k, r in zip(keys, raw, strict=True)
                if r is not None]

    async def _members(self, key: str) -> list[dict[str, Any]]:
        return await self._records(await self.client.zrange(self.k("ob_members", key), 0, -1))

    async def _message_row(self, key: str) -> dict[str, Any] | None:
        raw = await self.client.hgetall(self.k("ob_msg", key))
        if not raw:
            return None
        got = {_text(f): _text(v) for f, v in raw.items()}
        row: dict[str, Any] = {"key": key, "channel": got["channel"],
                               "alerts": int(got["alerts"]), "status": got["status"],
                               "attempts": int(got["attempts"]),
                               "last_error": got.get("last_error")}
        row.update({f: float(got[f]) if f in got else None for f in _MESSAGE_FLOATS})
        return row

    # -- alerts -----------------------------------------------------------------------------
    async def enqueue(self, alerts: Sequence[dict[str, Any]], now: float) -> int:
        if not alerts:
            return 0
        return int(await self._add_alerts(alerts, lambda a: a["channel"], now))

    async def unbatched(self, channel: str) -> list[dict[str, Any]]:
        keys = await self.client.zrange(self.k("ob_wait", channel), 0, -1)
        return [{**r["payload"], "created_at": r["created_at"]} for r in await self._records(keys)]

    async def last_event(self, channel: str, subject: str) -> dict[str, Any] | None:
        keys = await self.client.zrevrange(self.k("ob_subj", channel, subject), 0, 0)
        got = await self._records(keys)
        return got[0]["payload"] if got else None

    # -- messages ---------------------------------------------------------------------------
    async def make_message(self, key: str, channel: str, alert_keys: Sequence[str],
                           now: float) -> None:
        await self._message(keys=self._msg_keys(key, channel), args=[
            key, channel, repr(now), len(alert_keys), PENDING, 0, repr(now), "--", *alert_keys],
            client=self.client)

    async def due(self, now: float) -> list[dict[str, Any]]:
        out = []
        for raw in await self.client.zrangebyscore(self.k("ob_due"), "-inf", repr(now)):
            row = await self._message_row(_text(raw))
            if row is None or row["status"] != PENDING:
                continue
            out.append({"key": row["key"], "channel": row["channel"],
                        "created_at": row["created_at"], "attempts": row["attempts"],
                        "alerts": [r["payload"] for r in await self._members(row["key"])]})
        return sorted(out, key=lambda m: (m["created_at"], m["key"]))

    async def record(self, key: str, *, now: float, ok: bool, error: str | None = None,
                     next_at: float | None = None, drop: bool = False) -> None:
        await self._record(keys=[self.k("ob_msg", key), self.k("ob_due"), self.k("ob_status")],
                           args=[key, status_after(ok, drop), repr(now),
                                 repr(next_at if next_at is not None else now), error or "",
                                 "1" if error is not None else "0", repr(now) if ok else ""],
                           client=self.client)

    async def add_sent(self, key: str, channel: str, now: float, *, ok: bool,
                       error: str | None, alert: dict[str, Any]) -> None:
        extra: list[Any] = ["last_try_at", repr(now)]
        if error is not None:
            extra += ["last_error", error]
        if ok:
            extra += ["sent_at", repr(now)]
        async with self.client.pipeline(transaction=True) as pipe:  # both scripts or neither
            await self._add_alerts([alert], lambda a: channel, now, message=key, client=pipe)
            await self._message(keys=self._msg_keys(key, channel), args=[
                key, channel, repr(now), 1, status_after(ok, True), 1, repr(now), *extra, "--"],
                client=pipe)
            await pipe.execute()

    async def history(self, limit: int = 200) -> list[dict[str, Any]]:
        out = []
        for raw in await self.client.zrevrange(self.k("ob_msgs"), 0, max(limit, 1) - 1):
            row = await self._message_row(_text(raw))
            if row is None:
                continue
            row["events"] = [history_event(r["key"], r["event"], r["subject"], r["payload"])
                             for r in await self._members(row["key"])]
            out.append(row)
        return out

    async def counts(self) -> dict[str, int]:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.scard(self.k("ob_unbatched")).hgetall(self.k("ob_status"))
            waiting, statuses = await pipe.execute()
        out = {"waiting": int(waiting)}
        out.update({_text(s): int(n) for s, n in statuses.items() if int(n) > 0})
        return out

    async def prune(self, now: float, keep_s: float = KEEP_S,
                    keep_messages: int = KEEP_MESSAGES) -> None:
        msgs = self.k("ob_msgs")
        old = {_text(m) for m in await self.client.zrangebyscore(msgs, "-inf",
                                                                 f"({now - keep_s!r}")}
        old |= {_text(m) for m in await self.client.zrevrange(msgs, keep_messages, -1)}
        for key in sorted(old):
            row = await self._message_row(key)
            if row is None or row["status"] == PENDING:
                continue
            members = await self._members(key)
            keys = [*self._msg_keys(key, row["channel"])[:6], self.k("ob_members", key)]
            keys += [self.k("ob_subj", r["channel"], r["subject"]) for r in members]
            await self._forget(keys=keys, args=[key, *(r["key"] for r in members)],
                               client=self.client)
