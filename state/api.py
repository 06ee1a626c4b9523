"""SharedState: the async API that code outside the graph uses to write and read the state.

Writes are validated, then appended to the durable inbox through one writer task that
group-commits whatever has queued up; the call returns once its rows are committed. Reads
return the last checkpoint with every acknowledged but not yet folded row laid over it, so a
``get_*`` reflects every write acknowledged before it, from any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import orjson

from state import queries
from state.backends import DEFAULT_URL, Backend, make_backend
from state.config import validate_updates
from state.fingerprint import fingerprint, normalize_message
from state.fold import (
    KIND_ACK,
    KIND_CONFIG,
    KIND_ERROR,
    KIND_HEARTBEAT,
    KIND_INSIGHT,
    KIND_METRIC,
    KIND_OPTIMIZATION,
    KIND_REGISTER,
    KIND_SYSTEM,
)
from state.folder import FOLD_NODE, FoldReport, build_fold_graph, collect, overlay
from state.models import (
    PRIORITIES,
    InvalidInput,
    OptimizationRecord,
    PerformanceMetric,
    check_json,
    check_name,
    check_text,
)
from state.redact import is_secret_key
from state.schema import SYSTEM_THREAD

GROUP_COMMIT_MAX = 20_000
OVERLAY_LIMIT = 100_000
_Item = tuple[str, bytes]


def _positive(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or value == float("inf"):
        raise InvalidInput(field, f"must be a positive finite number, got {value!r}")
    return float(value)


def _dumps(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


class SharedState:
    """Handle on the shared state of one thread; open it with ``SharedState.open(url)``."""

    def __init__(self, backend: Backend, *, producer: str, thread_id: str, read_only: bool):
        self.backend = backend
        self.producer = producer
        self.thread_id = thread_id
        self.read_only = read_only
        self.config = {"configurable": {"thread_id": thread_id}}
        self._graph = build_fold_graph(backend)
        self._stream = 0
        self._seq = 0
        self._queue: asyncio.Queue[tuple[list[_Item], asyncio.Future] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str | None = None, *, producer: str = "api", thread_id: str = SYSTEM_THREAD,
        read_only: bool = False,
    ) -> AsyncIterator[SharedState]:
        """Open the state at ``url`` (default ``sqlite:///./data/state.db``)."""
        producer = check_name("producer", producer)
        backend = make_backend(url or DEFAULT_URL)
        await backend.setup()
        shared = cls(backend, producer=producer, thread_id=thread_id, read_only=read_only)
        try:
            yield shared
        finally:
            await shared.aclose()

    async def aclose(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
            await self.backend.close_stream(self._stream)
        await self.backend.aclose()

    # -- the write path -------------------------------------------------------------------
    async def _submit(self, items: list[_Item]) -> None:
        if self.read_only:
            raise PermissionError("this SharedState was opened read-only")
        if self._writer is None:
            self._stream = await self.backend.open_stream(self.producer)
            self._writer = asyncio.create_task(self._write_loop(), name="bga-inbox-writer")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        await future

    async def _write_loop(self) -> None:
        """Single writer: drain the queue into one transaction per round (group commit)."""
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first[0])
            stop = False
            while size < GROUP_COMMIT_MAX and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += len(nxt[0])
            rows = []
            seq = self._seq
            for items, _ in batch:
                for kind, payload in items:
                    seq += 1
                    rows.append((seq, kind, payload))
            try:
                await self.backend.append(self._stream, rows)
            except Exception as exc:  # nothing committed: seq not advanced, callers told
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                self._seq = seq
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
            if stop:
                return

    async def add_performance_metric(self, metric: PerformanceMetric | Mapping[str, Any]) -> None:
        await self._submit([self._metric_item(metric)])

    async def add_performance_metrics(
        self, metrics: Iterable[PerformanceMetric | Mapping[str, Any]]
    ) -> int:
        """Batch form: validates all first, then writes all in one transaction."""
        items = [self._metric_item(m) for m in metrics]
        if items:
            await self._submit(items)
        return len(items)

    def _metric_item(self, metric: PerformanceMetric | Mapping[str, Any]) -> _Item:
        if not isinstance(metric, PerformanceMetric):
            if not isinstance(metric, Mapping):
                raise InvalidInput("metric", f"expected PerformanceMetric, got {type(metric)}")
            metric = PerformanceMetric.checked(**metric)
        ts = metric.timestamp if metric.timestamp is not None else time.time()
        payload = {"s": metric.series, "v": metric.value, "t": ts}
        if metric.unit:
            payload["u"] = metric.unit
        return KIND_METRIC, _dumps(payload)

    async def add_error_pattern(self, error_type: str, error_message: str,
                                source_agent: str) -> str:
        """Record one occurrence; returns the pattern's stable id (its fingerprint)."""
        error_type = check_name("error_type", error_type)
        message = check_text("error_message", error_message)
        source_agent = check_name("source_agent", source_agent, allow_slash=False)
        pid = fingerprint(error_type, message)
        payload = {"id": pid, "type": error_type, "norm": normalize_message(message),
                   "msg": message[:1000], "a": source_agent, "t": time.time()}
        await self._submit([(KIND_ERROR, _dumps(payload))])
        return pid

    async def add_optimization_record(self, record: OptimizationRecord | Mapping[str, Any]) -> None:
        if not isinstance(record, OptimizationRecord):
            if not isinstance(record, Mapping):
                raise InvalidInput("record", f"expected OptimizationRecord, got {type(record)}")
            record = OptimizationRecord.checked(**record)
        payload = record.model_dump()
        payload["t"] = payload.pop("timestamp") or time.time()
        await self._submit([(KIND_OPTIMIZATION, _dumps(payload))])

    async def add_insight(
        self, insight_type: str, content: dict, source_agent: str, priority: str = "medium",
        *, dedupe_key: str | None = None,
    ) -> str:
        """Record an insight; the same dedupe key bumps occurrences. Returns the insight id."""
        insight_type = check_name("insight_type", insight_type)
        source_agent = check_name("source_agent", source_agent, allow_slash=False)
        if priority not in PRIORITIES:
            raise InvalidInput("priority", f"must be one of {', '.join(PRIORITIES)}, "
                                           f"got {priority!r}")
        if not isinstance(content, dict):
            raise InvalidInput("content", f"must be a dict, got {type(content).__name__}")
        content = check_json("content", content)
        key = dedupe_key if dedupe_key is not None else content.get("key")
        basis = key if key is not None else orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        iid = insight_id(insight_type, source_agent, basis)
        payload = {"id": iid, "type": insight_type, "a": source_agent, "p": priority,
                   "c": content, "t": time.time()}
        await self._submit([(KIND_INSIGHT, _dumps(payload))])
        return iid

    async def mark_insight_acted_upon(self, insight_id: str) -> bool:
        """False (and nothing written) if no such insight exists."""
        insight_id = check_name("insight_id", insight_id)
        state = await self.read()
        rec = (state.get("insights") or {}).get(insight_id)
        if rec is None or rec.get("body") is None:
            return False
        await self._submit([(KIND_ACK, _dumps({"id": insight_id, "t": time.time()}))])
        return True

    async def register_agent(
        self, agent: Any, kind: str | None = None, interval_s: float | None = None,
        schedule: str | None = None, **meta: Any,
    ) -> None:
        """Register by id (``register_agent("x", kind=..., interval_s=...)``) or agent object."""
        if not isinstance(agent, str):
            kind = kind or getattr(agent, "kind", None)
            interval_s = interval_s if interval_s is not None else getattr(agent, "interval_s",
                                                                            None)
            schedule = schedule or getattr(agent, "schedule", None)
            agent = getattr(agent, "agent_id", None)
        agent_id = check_name("agent_id", agent, allow_slash=False)
        kind = check_name("kind", kind or "agent")
        if interval_s is not None:
            interval_s = _positive("interval_s", interval_s)
        if schedule is not None:
            schedule = check_name("schedule", schedule)
        payload = {"a": agent_id, "kind": kind, "interval_s": interval_s, "schedule": schedule,
                   "meta": check_json("meta", meta), "t": time.time()}
        await self._submit([(KIND_REGISTER, _dumps(payload))])

    async def update_agent_heartbeat(self, agent_id: str, heartbeat_data: dict) -> None:
        agent_id = check_name("agent_id", agent_id, allow_slash=False)
        if not isinstance(heartbeat_data, dict):
            raise InvalidInput("heartbeat_data", "must be a dict")
        data = check_json("heartbeat_data", heartbeat_data, limit=4096)
        status = check_name("heartbeat_data.status", str(data.get("status", "running")))
        payload = {"a": agent_id, "status": status, "d": data, "t": time.time()}
        await self._submit([(KIND_HEARTBEAT, _dumps(payload))])

    async def receive_heartbeat(self, agent_id: str, heartbeat_data: dict) -> None:
        """The coordinator's name for recording a heartbeat (same effect)."""
        await self.update_agent_heartbeat(agent_id, heartbeat_data)

    async def update_system_state(self, updates: dict) -> None:
        if not isinstance(updates, dict) or not updates:
            raise InvalidInput("updates", "must be a non-empty dict")
        for key in updates:
            check_name("updates key", key)
            if is_secret_key(key):
                raise InvalidInput(key, "secrets never go into shared state")
        payload = {"u": check_json("updates", updates), "t": time.time()}
        await self._submit([(KIND_SYSTEM, _dumps(payload))])

    async def update_config(self, updates: dict) -> None:
        """Validated against the whole config first; a bad value changes nothing."""
        current = queries.config_flat(await self.read())
        flat = validate_updates(current, updates)
        await self._submit([(KIND_CONFIG, _dumps({"u": flat, "t": time.time()}))])

    # -- reads ----------------------------------------------------------------------------
    async def read(self, *, attempts: int = 20) -> dict[str, Any]:
        """Latest checkpoint values with every unfolded inbox row laid over them."""
        for _ in range(attempts):
            before = await self.backend.latest_checkpoint_id(self.thread_id)
            rows = await self.backend.read_inbox(OVERLAY_LIMIT + 1)
            tup = await self.backend.checkpointer.aget_tuple(self.config)
            current = tup.config["configurable"]["checkpoint_id"] if tup else None
            if current != before:
                continue  # a fold committed meanwhile: rows and state may not pair up
            state = dict(tup.checkpoint["channel_values"]) if tup else {}
            if len(rows) > OVERLAY_LIMIT and not self.read_only:
                await self.flush()
                continue
            self._pending = len(rows)
            return overlay(state, rows)
        raise TimeoutError("state kept changing while reading; try again")

    async def flush(self, *, wait: float | None = None) -> FoldReport:
        """Fold everything pending now (takes the fold lock; waits for a running tick)."""
        total = FoldReport()
        async with self.backend.fold_lock(wait):
            while True:
                snap = await self._graph.aget_state(self.config)
                update, report = await collect(self.backend, dict(snap.values), time.time(),
                                               batch=200_000)
                if not update:
                    break
                await self._graph.aupdate_state(self.config, update, as_node=FOLD_NODE)
                await self.backend.delete_folded(report.marks)
                total.folded += report.folded
                total.quarantined += report.quarantined
            keep = queries.config_of(dict(snap.values)).retention.checkpoints
            await self.backend.prune_checkpoints(self.thread_id, keep)
        return total

    async def get_active_agents(self, max_age_minutes: int = 5) -> list[dict]:
        _positive("max_age_minutes", max_age_minutes)
        return queries.active_agents(await self.read(), time.time(), max_age_minutes)

    async def get_agents(self) -> list[dict]:
        return queries.agent_list(await self.read())

    async def get_system_state(self) -> dict:
        state = await self.read()
        return queries.system_state(state, time.time(), pending=self._pending)

    async def get_performance_summary(self, hours: int = 1) -> dict:
        hours = _positive("hours", hours)
        return queries.performance_summary(await self.read(), hours, time.time())

    async def get_error_patterns(
        self, error_type: str | None = None, min_frequency: int = 1,
        time_window_hours: int = 24,
    ) -> list:
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) \
                or min_frequency < 1:
            raise InvalidInput("min_frequency", "must be an integer >= 1")
        hours = _positive("time_window_hours", time_window_hours)
        return queries.error_patterns(await self.read(), time.time(), error_type,
                                      min_frequency, hours)

    async def get_recent_optimizations(
        self, optimization_type: str | None = None, hours: int = 24, success_only: bool = False,
    ) -> list:
        hours = _positive("hours", hours)
        return queries.recent_optimizations(await self.read(), time.time(), optimization_type,
                                            hours, success_only)

    async def get_insights(
        self, priority: str | None = None, insight_type: str | None = None,
        acted_upon: bool | None = None, limit: int | None = None,
    ) -> list:
        if priority is not None and priority not in PRIORITIES:
            raise InvalidInput("priority", f"must be one of {', '.join(PRIORITIES)}")
        return queries.insight_list(await self.read(), priority, insight_type, acted_upon, limit)

    async def export_state(self) -> dict:
        """JSON-serialisable snapshot (secrets redacted); ``restore_state`` takes it back."""
        return queries.export_document(await self.read())

    async def restore_state(self, document: dict, *, force: bool = False) -> None:
        """Load an exported snapshot; refuses a non-empty database unless ``force``."""
        from langgraph.types import Overwrite

        values = queries.state_from_document(document)
        async with self.backend.fold_lock(wait=30):
            if not force and not await self.backend.is_empty():
                raise InvalidInput("database", "is not empty; restore with force to replace it")
            snap = await self._graph.aget_state(self.config)
            # A channel without a value yet (e.g. ``tick``, whose type has no default) takes its
            # first update as is: an Overwrite there would be stored as the value itself.
            update = {ch: Overwrite(v) if ch in snap.values else v for ch, v in values.items()}
            update["inbox"] = Overwrite(dict(snap.values.get("inbox") or {}))
            await self._graph.aupdate_state(self.config, update, as_node=FOLD_NODE)

    _pending = 0


def insight_id(insight_type: str, source_agent: str, basis: object) -> str:
    import hashlib

    raw = basis if isinstance(basis, bytes) else str(basis).encode()
    digest = hashlib.blake2b(f"{insight_type}\n{source_agent}\n".encode() + raw, digest_size=8)
    return f"ins_{digest.hexdigest()}"
