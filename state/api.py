"""SharedState: the async API that code outside the graph uses to write and read the state.

Writes are validated, then appended to the durable inbox through one writer task that
group-commits whatever has queued up; the call returns once its rows are committed. Reads
return the last checkpoint with every acknowledged but not yet folded row laid over it, so a
``get_*`` reflects every write acknowledged before it, from any process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from langchain_core.runnables import RunnableConfig

from state import events, lifecycle, queries
from state.backends import Backend, LockBusy, StaleCheckpoint, make_backend
from state.backends.history import keep_linear
from state.checkpoints import load_values
from state.config import validate_updates
from state.context import Clock
from state.fold import check_payload
from state.folder import FOLD_NODE, FoldReport, build_fold_graph, collect, pending_delta
from state.lifecycle import STATES
from state.models import (
    PRIORITIES,
    InvalidInput,
    OptimizationRecord,
    PerformanceMetric,
    check_name,
    check_utf8_tree,
)
from state.schema import SYSTEM_THREAD, apply_update, thread_uuid
from state.settings import database_url

GROUP_COMMIT_MAX = 20_000
RESOLVE_S = 30.0  # how long a writer keeps asking whether a batch whose reply it lost committed
OVERLAY_LIMIT = 100_000
NOW_PER_TURN = 16  # direct commits per turn of the event loop (``SharedState._commit_now``)
_Item = tuple[str, bytes]
T = TypeVar("T")


_dumps = orjson.dumps  # a payload's inbox encoding, made once per event


class _Write(asyncio.Future[T]):
    """The future of a write committed in its call (done already). Awaiting it counts as a
    new turn for its handle's direct commits (``SharedState._commit_now``): a caller that
    awaits each write before making the next is writing one at a time, however long it goes
    without giving the loop a turn (an ``await`` of a done future does not), so each of its
    writes commits in the call; calls made without awaiting (a burst for ``gather``) queue
    for one group commit after the first ``NOW_PER_TURN``. A queued write's future is a plain
    one: awaiting it gives the loop its turn (a subclass made ``gather`` twice as dear)."""

    __slots__ = ("_owner",)

    def __init__(self, owner: SharedState, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._owner = owner

    def __await__(self) -> Generator[Any, None, T]:
        self._owner._now_turn = 0
        return super().__await__()


def _done(value: T) -> asyncio.Future[T]:
    """A future that is done already (a write of nothing)."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


class CommitUnknown(ConnectionError):
    """A write failed and the database could not be asked whether it committed; the handle
    asks again before its next write (never writing over it, never writing it twice)."""


def checked(batch: Sequence[events.Event]) -> Sequence[events.Event]:
    """Events for ``write_events``: each a (kind, payload) pair matching its kind's schema."""
    if not isinstance(batch, list | tuple):
        raise InvalidInput("batch", "must be a list of (kind, payload) events")
    for i, event in enumerate(batch):
        if not isinstance(event, tuple | list) or len(event) != 2 \
                or not isinstance(event[0], str) or not isinstance(event[1], dict):
            raise InvalidInput(f"batch[{i}]", "must be a (kind, payload dict) pair")
        try:
            check_payload(event[0], event[1])
        except ValueError as exc:
            raise InvalidInput(f"batch[{i}]", str(exc)) from None
    return batch


class SharedState:
    """Handle on the shared state of one thread; open it with ``SharedState.open(url)``."""

    def __init__(self, backend: Backend, *, producer: str, thread_id: str, read_only: bool,
                 clock: Clock = time.time):
        self.backend = backend
        self.clock = clock
        """Now, for every time this handle stamps on a write or reads the state at; a tick
        run on this handle gives the graph the same clock (``graph.runner.tick``)."""
        self.producer = producer
        self.thread_id = thread_uuid(thread_id)
        keep_linear(backend.checkpointer, self.thread_id)  # its folds need a linear history
        self.read_only = read_only
        self.config: RunnableConfig = {"configurable": {"thread_id": self.thread_id}}
        self._graph = build_fold_graph(backend)
        self._stream = 0
        self._seq = 0
        # calls waiting for the next group commit, oldest first: their items, and in step
        # with them their futures (two deques, not one of pairs: with 1,000 calls in flight a
        # pair per call was one more object for the cyclic GC to walk and promote, and a
        # call's items, a tuple of str and bytes, are left out of its sight)
        self._queue: collections.deque[Sequence[_Item]] = collections.deque()
        self._futures: collections.deque[asyncio.Future[None]] = collections.deque()
        self._wake: asyncio.Future[None] | None = None  # the idle writer waits on it
        self._closing = False
        self._writer: asyncio.Task | None = None  # opens the stream, then group-commits
        self._unsure: int | None = None  # last seq of a batch whose commit outcome is unknown
        self._writing = False  # the writer has a batch in flight
        self._now_turn = 0  # writes committed by ``_commit_now`` in this turn of the loop
        self._turn_ends = False  # ``_next_turn`` is scheduled
        self._read_cache: dict[str, Any] = {}  # ``read``: the last checkpoint and overlay

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str | None = None, *, producer: str = "api", thread_id: str = SYSTEM_THREAD,
        read_only: bool = False, must_exist: bool = False, failover_s: float | None = None,
        clock: Clock = time.time,
    ) -> AsyncIterator[SharedState]:
        """Open the state at ``url`` (default: ``$BGA_DATABASE_URL``, then
        ``sqlite:///./data/state.db``); ``must_exist`` refuses to create a new database;
        ``read_only`` writes nothing at all: no migration on open (the database must exist
        with a current schema, else a ValueError says what is missing), and every write,
        ``flush`` and ``restore_state`` raise PermissionError; ``failover_s`` bounds how long
        a dead host's locks outlive it (see ``Backend``); ``clock`` is now (tests pass a fake
        clock they move by hand)."""
        producer = check_name("producer", producer)
        check_name("thread_id", thread_id)
        if failover_s is not None:
            failover_s = events.positive("failover_s", failover_s)
        backend = make_backend(url or database_url(), failover_s=failover_s)
        await backend.setup(create=not must_exist, read_only=read_only)
        shared = cls(backend, producer=producer, thread_id=thread_id, read_only=read_only,
                     clock=clock)
        try:
            yield shared
        finally:
            await shared.aclose()

    async def aclose(self) -> None:
        if self._writer is not None:
            self._closing = True  # the writer commits what is queued, then stops
            self._nudge()
            await self._writer
            self._writer = None
            await self.backend.close_stream(self._stream)
        await self.backend.aclose()

    # -- the write path -------------------------------------------------------------------
    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only:
            raise PermissionError(f"this SharedState was opened read-only: {what} would write "
                                  f"to {self.backend.where}; open it without read_only")

    def _send(self, items: Sequence[_Item]) -> asyncio.Future[None]:
        """Queue ``items`` (already validated and encoded) for the writer, at the call: the
        writes of one handle commit in the order they were called, however they are
        awaited. The future is done once they are committed (or failed). The first write
        starts the writer, which opens this handle's inbox stream before anything else."""
        if self._writer is None:
            self._refuse_if_read_only("a write")
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name="bga-inbox-writer")
        return self._enqueue(items)

    def _then(self, write: asyncio.Future[None], value: T) -> asyncio.Future[T]:
        """A future of ``value``, done when ``write`` is (its error, or its cancellation)."""
        loop = asyncio.get_running_loop()
        if isinstance(write, _Write):  # committed in the call: so is this one
            done: asyncio.Future[T] = _Write(self, loop)
            done.set_result(value)
            return done
        out: asyncio.Future[T] = asyncio.Future(loop=loop)

        def settle(done: asyncio.Future[None]) -> None:
            if out.done():
                return
            if done.cancelled():
                out.cancel()
            elif (exc := done.exception()) is not None:
                out.set_exception(exc)
            else:
                out.set_result(value)

        write.add_done_callback(settle)
        return out

    def _enqueue(self, items: Sequence[_Item]) -> asyncio.Future[None]:
        """Queue ``items`` for the next group commit, or commit them in this call if the
        backend can and nothing is queued or being written (``_commit_now``); the future is
        done once they are committed (or failed)."""
        loop = asyncio.get_running_loop()
        if self._commit_now(items, loop):
            done: asyncio.Future[None] = _Write(self, loop)
            done.set_result(None)
            return done
        future: asyncio.Future[None] = asyncio.Future(loop=loop)  # awaiting it yields a turn
        self._queue.append(items)
        self._futures.append(future)
        if self._wake is not None:
            self._nudge()
        return future

    def _commit_now(self, items: Sequence[_Item], loop: asyncio.AbstractEventLoop) -> bool:
        """A write with nothing queued or in flight before it, committed here by the
        backend's ``append_now`` (SQLite: a ~8 us commit that never waits for a lock): one
        await at a time costs no trip through the writer task and the event loop. At most
        ``NOW_PER_TURN`` such commits per turn of the loop: past that the calls of a burst
        (a ``gather``) queue for one group commit. Anything but a clean commit (a lock, an
        error) leaves the write to the writer, whose error handling is the only one."""
        if len(items) > self.backend.append_now_rows or self._queue or self._writing \
                or not self._stream or self._unsure is not None \
                or self._now_turn >= NOW_PER_TURN:
            return False  # (on a backend without append_now, no rows are made for it)
        seq = self._seq
        rows = [(seq + i, kind, payload) for i, (kind, payload) in enumerate(items, 1)]
        try:
            if not self.backend.append_now(self._stream, rows):
                return False
        except Exception:
            return False  # the writer tries again and finds out what happened
        self._seq = rows[-1][0]
        if not self._turn_ends:
            self._turn_ends = True
            loop.call_soon(self._next_turn)
        self._now_turn += 1
        return True

    def _next_turn(self) -> None:
        self._now_turn = 0
        self._turn_ends = False

    def _nudge(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _write_loop(self) -> None:
        """Single writer: drain the queue into one transaction per round (group commit);
        after ``aclose`` it commits what is queued, then returns."""
        queue, futures = self._queue, self._futures
        loop = asyncio.get_running_loop()
        try:
            self._stream = await self.backend.open_stream(self.producer)
        except Exception as exc:  # the queued calls get the error; the next write tries again
            self._writer = None
            queue.clear()
            while futures:
                future = futures.popleft()
                if not future.done():
                    future.set_exception(exc)
            return
        while True:
            if not queue:
                if self._closing:
                    return
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            batch = [queue.popleft()]
            size = len(batch[0])
            while queue and size < GROUP_COMMIT_MAX:
                nxt = queue.popleft()
                batch.append(nxt)
                size += len(nxt)
            waiting = [futures.popleft() for _ in batch]
            self._writing = True
            try:
                await self._write_batch(batch, waiting)
            finally:
                self._writing = False

    async def _write_batch(self, batch: list[Sequence[_Item]],
                           waiting: list[asyncio.Future[None]]) -> None:
        """One group commit of ``batch``, the items of the calls ``waiting`` for it. After
        an error its outcome is looked up (the stream's committed sequence) before anything
        else is written: a batch that committed although its reply was lost is acknowledged,
        one that did not is refused, so callers may retry."""
        error: BaseException | None = None
        if self._unsure is not None and await self._resolve(self._unsure) is None:
            error = CommitUnknown(f"the outcome of an earlier write to {self.backend.where} is "
                                  "still unknown (database unreachable); nothing written")
        else:
            first = self._seq + 1
            rows = [(seq, kind, payload) for seq, (kind, payload) in
                    enumerate(itertools.chain.from_iterable(batch), first)]
            seq = first + len(rows) - 1
            try:
                await self.backend.append(self._stream, rows)
                self._seq = seq
            except Exception as exc:
                committed = await self._resolve(seq)
                if committed is None:
                    self._unsure = seq
                    error = CommitUnknown(f"write to {self.backend.where} failed ({exc}) and "
                                          "whether it committed is unknown")
                elif not committed:
                    error = exc  # nothing committed: seq not advanced, callers may retry
        for fut in waiting:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    async def _resolve(self, upto: int) -> bool | None:
        """Whether this stream's rows up to ``upto`` committed (None: cannot tell yet)."""
        delay = 0.05
        deadline = time.monotonic() + RESOLVE_S
        while True:
            try:
                committed = await self.backend.committed_seq(self._stream)
            except Exception:
                if time.monotonic() + delay > deadline:
                    return None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._unsure = None
            self._seq = committed  # one writer per stream: nothing else moves it
            return committed >= upto

    def _event(self, event: events.Event) -> asyncio.Future[None]:
        kind, payload = event
        return self._send(((kind, _dumps(payload)),))

    # Every write below validates at the call (bad input raises ``InvalidInput`` there, and
    # nothing is written) and returns a future, done once the write is committed: ``await``
    # it, or hand many to ``asyncio.gather``, which takes a future as it is where it wraps a
    # coroutine in a task of its own (with 1,000 calls in flight that was most of a call's
    # cost, and most of the cyclic GC's work: README, "Measured figures").
    # ``asyncio.create_task`` wants a coroutine; ``asyncio.ensure_future`` takes these.

    def add_performance_metric(self, metric: PerformanceMetric | Mapping[str, Any]
                               ) -> asyncio.Future[None]:
        """Record one metric (folded into its series' buckets)."""
        return self._event(events.metric(metric, self.clock()))

    def write_events(self, batch: Sequence[events.Event]) -> asyncio.Future[None]:
        """Events made by ``state.events`` (already validated), committed together: all or
        none. A worker writes one agent step this way, its reports and new cursor at once."""
        items = [(kind, _dumps(payload)) for kind, payload in checked(batch)]
        return self._send(items) if items else _done(None)

    def add_performance_metrics(
        self, metrics: Iterable[PerformanceMetric | Mapping[str, Any]]
    ) -> asyncio.Future[int]:
        """Batch form: validates all first, then writes all in one transaction; the future's
        value is how many."""
        if isinstance(metrics, str | bytes | Mapping) or not isinstance(metrics, Iterable):
            raise InvalidInput("metrics", "must be a list of metrics")
        now = self.clock()
        items = [(kind, _dumps(payload))
                 for kind, payload in (events.metric(m, now) for m in metrics)]
        return self._then(self._send(items), len(items)) if items else _done(0)

    def add_error_pattern(self, error_type: str, error_message: str,
                          source_agent: str) -> asyncio.Future[str]:
        """Record one occurrence; the future's value is the pattern's stable id (its
        fingerprint)."""
        event = events.error(error_type, error_message, source_agent, now=self.clock())
        return self._then(self._event(event), event[1]["id"])

    def add_optimization_record(self, record: OptimizationRecord | Mapping[str, Any]
                                ) -> asyncio.Future[None]:
        return self._event(events.optimization(record, now=self.clock()))

    def add_insight(
        self, insight_type: str, content: dict, source_agent: str, priority: str = "medium",
        *, dedupe_key: str | None = None,
    ) -> asyncio.Future[str]:
        """Record an insight; the same dedupe key bumps occurrences. The future's value is
        the insight id."""
        event = events.insight(insight_type, content, source_agent, priority, dedupe_key,
                               now=self.clock())
        return self._then(self._event(event), event[1]["id"])

    async def mark_insight_acted_upon(self, insight_id: str) -> bool:
        """Acknowledge one insight (the seed's name); False (and nothing written) if no such
        insight exists."""
        return bool(await self.update_insights([insight_id], "acknowledge", missing_ok=True))

    async def update_insights(
        self, insight_ids: Iterable[str], action: str, *, duration_s: float | None = None,
        by: str | None = None, missing_ok: bool = False,
    ) -> list[str]:
        """A lifecycle action on many insights at once, all in one transaction: ``acknowledge``,
        ``resolve``, ``reopen``, ``mute`` (for ``duration_s``) or ``unmute``. ``by`` (default:
        this producer) is recorded in each one's history. Returns the ids changed. An unknown
        id raises ``InvalidInput`` and nothing is written (``missing_ok``: it is skipped)."""
        if isinstance(insight_ids, str) or not isinstance(insight_ids, list | tuple | set
                                                          | frozenset):
            raise InvalidInput("insight_ids", "must be a list of insight ids")
        if not all(isinstance(iid, str) for iid in insight_ids):
            raise InvalidInput("insight_ids", "every insight id must be a string")
        by = self.producer if by is None else by
        now = self.clock()
        batch = [events.triage(iid, action, by, duration_s=duration_s, now=now)
                 for iid in dict.fromkeys(insight_ids)]
        known = await self.read()
        insights = known.get("insights") or {}
        found = [e for e in batch if (insights.get(e[1]["id"]) or {}).get("body") is not None]
        if len(found) < len(batch) and not missing_ok:
            unknown = sorted({e[1]["id"] for e in batch} - {e[1]["id"] for e in found})
            raise InvalidInput("insight_ids", f"no such insight: {', '.join(unknown[:5])}")
        await self.write_events(found)
        return [e[1]["id"] for e in found]

    def mute_insight_type(self, insight_type: str, duration_s: float | None, *,
                          by: str | None = None) -> asyncio.Future[None]:
        """Mute every insight of ``insight_type``, present and future, for ``duration_s``
        (None: unmute now). Muted insights do not count as open and do not alert."""
        return self._event(events.mute_type(insight_type, self.producer if by is None else by,
                                            duration_s, now=self.clock()))

    def mark_insights_seen(self, viewer: str | None = None) -> asyncio.Future[None]:
        """``viewer`` (default: this producer) has looked: the "new since you last looked"
        count starts again from now."""
        return self._event(events.insights_seen(self.producer if viewer is None else viewer,
                                                now=self.clock()))

    def register_agent(
        self, agent: Any, kind: str | None = None, interval_s: float | None = None,
        schedule: str | None = None, **meta: Any,
    ) -> asyncio.Future[None]:
        """Register by id (``register_agent("x", kind=..., interval_s=...)``) or agent object."""
        if not isinstance(agent, str):
            kind = kind or getattr(agent, "kind", None)
            if interval_s is None:
                interval_s = getattr(agent, "interval_s", None)
            schedule = schedule or getattr(agent, "schedule", None)
            agent = getattr(agent, "agent_id", None)
        return self._event(events.registration(agent, kind, interval_s, schedule, meta,
                                               now=self.clock()))

    def update_agent_heartbeat(self, agent_id: str, heartbeat_data: dict
                               ) -> asyncio.Future[None]:
        return self._event(events.heartbeat(agent_id, heartbeat_data, now=self.clock()))

    def receive_heartbeat(self, agent_id: str, heartbeat_data: dict) -> asyncio.Future[None]:
        """The coordinator's name for recording a heartbeat (same effect)."""
        return self.update_agent_heartbeat(agent_id, heartbeat_data)

    def update_system_state(self, updates: dict) -> asyncio.Future[None]:
        return self._event(events.system_update(updates, now=self.clock()))

    async def update_config(self, updates: dict, *, by: str | None = None) -> None:
        """Validated against the whole config first; a bad value changes nothing. With ``by``
        (the dashboard's user), who changed which keys is kept as the system value
        ``config_change``, written in the same transaction."""
        state = await self.read()
        known = set(state.get("agents") or {})
        flat = validate_updates(queries.config_flat(state), updates, known)
        if by is None:
            await self._event(events.config_update(flat, now=self.clock()))
            return
        now = self.clock()
        change = {"by": check_name("by", by), "at": now, "keys": sorted(flat)}
        await self.write_events([events.config_update(flat, now),
                                 events.system_update({"config_change": change}, now)])

    def request_optimization(self, *, by: str | None = None) -> asyncio.Future[None]:
        """Ask the coordinator to run an optimization cycle on its next tick (manual cycle);
        with ``by``, who asked is the system value ``optimization_request``."""
        updates: dict[str, Any] = {"optimization_requested": True}
        if by is not None:
            updates["optimization_request"] = {"by": check_name("by", by), "at": self.clock()}
        return self.update_system_state(updates)

    # -- reads ----------------------------------------------------------------------------
    async def read(self, *, attempts: int = 20,
                   cache: dict[str, Any] | None = None) -> dict[str, Any]:
        """Latest checkpoint values with every unfolded inbox row laid over them.

        Consistent without a shared transaction: folds delete only rows the newest committed
        checkpoint already holds, so if no checkpoint was committed between loading the state
        and finishing the inbox scan, state + rows above its watermarks is exact. Otherwise
        read again. The scan pages through the inbox into one bounded delta.

        What was read last is kept (this handle's own cache, or ``cache``: a dict the caller
        keeps across handles, e.g. the dashboard's): the decoded checkpoint by its id (with a
        caller's ``cache``, also the tree it was decoded from: ``Backend.share_trees``), and the
        state with the unfolded rows laid over it by that id and the inbox heads
        (``Backend.inbox_heads``, read before the rows, and the rows read up to them). While
        no new checkpoint is committed only the heads are read; while they are the same too,
        nothing is merged again; when streams grew, only their new rows are read and laid
        over the kept overlay (the reducers are associative; a float ``sum`` may differ from
        one merge of all the rows in its last bits, as between fold batches). A read after a
        write still sees it: the write moved its stream's head. The values are shared with
        later reads: never mutate them.
        """
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 0 < attempts <= 1000:
            raise InvalidInput("attempts", "must be an integer from 1 to 1000")
        if cache is None:
            cache = self._read_cache
        else:  # the decoded trees too: a new checkpoint costs its new entries, not a decode
            self.backend.share_trees(cache.setdefault("trees", {}))
        folded = False
        for _ in range(attempts):
            before = await self.backend.latest_checkpoint_id(self.thread_id)
            # entries are tuples, each set whole: sessions of one dashboard share ``cache``
            last = cache.get("checkpoint")
            if before is not None and last is not None and last[0] == before:
                state = last[1]
            else:
                current, state, _ = await load_values(self.backend.checkpointer, self.config)
                if current != before:
                    continue
                cache["checkpoint"] = (current, state)
            heads = await self.backend.inbox_heads()
            marks = state.get("inbox") or {}
            overlay = cache.get("overlay")
            if heads is not None and overlay is not None and overlay[0] == before \
                    and all(heads.get(s, -1) >= seq for s, seq in overlay[1].items()):
                # the same checkpoint, streams only grew: lay the rows since over the overlay
                if overlay[1] == heads:
                    pending, merged = overlay[2], overlay[3]
                else:
                    more, delta = await pending_delta(self.backend, marks, heads, overlay[1])
                    pending = overlay[2] + more
                    merged = self._laid_over(overlay[3], delta) if more else overlay[3]
            else:
                pending, delta = await pending_delta(self.backend, marks, heads)
                merged = self._laid_over(state, delta) if pending else state
            if await self.backend.latest_checkpoint_id(self.thread_id) != before:
                continue  # a fold committed meanwhile: rows and state may not pair up
            if pending > OVERLAY_LIMIT and not self.read_only and not folded:
                folded = True
                try:  # cheaper for every later read; never waits for a running tick
                    await self.flush(wait=0)
                except LockBusy:
                    pass  # a tick is folding them now: this read keeps its overlay
                else:
                    continue
            if heads is not None and before is not None:
                cache["overlay"] = (before, heads, pending, merged)
            self._pending = pending
            return merged
        raise TimeoutError("state kept changing while reading; try again")

    @staticmethod
    def _laid_over(state: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
        merged = apply_update(state, delta)
        if "insights" in delta:  # as the fold will record them (its firings dropped)
            merged["insights"] = lifecycle.settle(merged["insights"])
        return merged

    async def flush(self, *, wait: float | None = None) -> FoldReport:
        """Fold everything pending now (takes the fold lock; waits for a running tick).
        A read-only handle refuses (PermissionError)."""
        self._refuse_if_read_only("flush()")
        if wait is not None and wait != 0:  # 0: do not wait for a running tick
            wait = events.positive("wait", wait)
        total = FoldReport()
        async with self.backend.fold_lock(wait):
            while True:
                snap = await self._graph.aget_state(self.config)
                values = dict(snap.values)
                update, report = await collect(self.backend, values, self.clock(),
                                               queries.config_of(values).ticker.fold_batch)
                if not update:
                    break
                try:
                    await self._graph.aupdate_state(self.config, update, as_node=FOLD_NODE)
                except StaleCheckpoint:
                    continue  # a writer outside the lock (langgraph dev) got there first
                await self.backend.delete_folded(report.marks)
                total.folded += report.folded
                total.quarantined += report.quarantined
            keep = queries.config_of(dict(snap.values)).retention.checkpoints
            await self.backend.prune_checkpoints(self.thread_id, keep)
        return total

    async def get_active_agents(self, max_age_minutes: int = 5) -> list[dict]:
        events.positive("max_age_minutes", max_age_minutes)
        return queries.active_agents(await self.read(), self.clock(), max_age_minutes)

    async def get_agents(self) -> list[dict]:
        """Every agent with its liveness verdict now (``queries.agent_liveness``)."""
        return queries.agent_list(await self.read(), self.clock())

    async def get_processes(self) -> list[dict]:
        """The leading coordinator and every worker process, on every host."""
        return queries.processes(await self.read(), self.clock())

    async def get_system_state(self) -> dict:
        state = await self.read()
        return queries.system_state(state, self.clock(), pending=self._pending)

    async def get_performance_summary(self, hours: float = 1) -> dict:
        hours = events.positive("hours", hours)
        return queries.performance_summary(await self.read(), hours, self.clock())

    async def get_error_patterns(
        self, error_type: str | None = None, min_frequency: int = 1,
        time_window_hours: int = 24,
    ) -> list:
        if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) \
                or min_frequency < 1:
            raise InvalidInput("min_frequency", "must be an integer >= 1")
        hours = events.positive("time_window_hours", time_window_hours)
        return queries.error_patterns(await self.read(), self.clock(), error_type,
                                      min_frequency, hours)

    async def get_recent_optimizations(
        self, optimization_type: str | None = None, hours: float = 24, success_only: bool = False,
    ) -> list:
        hours = events.positive("hours", hours)
        return queries.recent_optimizations(await self.read(), self.clock(), optimization_type,
                                            hours, success_only)

    async def get_insights(
        self, priority: str | None = None, insight_type: str | None = None,
        acted_upon: bool | None = None, limit: int | None = None, *,
        status: str | Iterable[str] | None = None,
    ) -> list:
        """Insights with their lifecycle; ``status``: one or more of open, regressed,
        acknowledged, resolved, muted."""
        if priority is not None and (not isinstance(priority, str) or priority not in PRIORITIES):
            raise InvalidInput("priority", f"must be one of {', '.join(PRIORITIES)}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 1):
            raise InvalidInput("limit", "must be an integer >= 1")
        if insight_type is not None and not isinstance(insight_type, str):
            raise InvalidInput("insight_type", "must be a string")
        if acted_upon is not None and not isinstance(acted_upon, bool):
            raise InvalidInput("acted_upon", "must be true or false")
        if status is not None:
            if not isinstance(status, str | list | tuple | set | frozenset):
                raise InvalidInput("status", f"must be one of {', '.join(STATES)} or a list")
            for s in [status] if isinstance(status, str) else list(status):
                if s not in STATES:
                    raise InvalidInput("status", f"must be one of {', '.join(STATES)}, "
                                                 f"got {s!r}")
        return queries.insight_list(await self.read(), priority, insight_type, acted_upon,
                                    limit, status=status, now=self.clock())

    async def get_insight_counts(self, viewer: str | None = None) -> dict:
        """Counts by status, open by priority, and ``new``: open or regressed since
        ``viewer`` (default: this producer) last marked them seen."""
        if viewer is not None and not isinstance(viewer, str):
            raise InvalidInput("viewer", "must be a string")
        state = await self.read()
        viewer = self.producer if viewer is None else viewer
        return queries.insight_counts(queries.insight_list(state, now=self.clock()),
                                      lifecycle.seen_at(state, viewer))

    async def export_state(self) -> dict:
        """JSON-serialisable snapshot (secrets redacted); ``restore_state`` takes it back."""
        return queries.export_document(await self.read())

    async def restore_state(self, document: dict, *, force: bool = False) -> None:
        """Load an exported snapshot; refuses a non-empty database unless ``force``, and a
        read-only handle always (PermissionError)."""
        from langgraph.types import Overwrite

        self._refuse_if_read_only("restore_state()")
        try:
            values = queries.state_from_document(document)
            check_utf8_tree("document", values)  # no lone surrogate reaches the saver
        except InvalidInput:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InvalidInput("document", str(exc) or type(exc).__name__) from None
        async with self.backend.fold_lock(wait=30):
            if not force and not await self.backend.is_empty():
                raise InvalidInput("database", "is not empty; restore with force to replace it")
            snap = await self._graph.aget_state(self.config)
            update = {ch: Overwrite(v) for ch, v in values.items()}
            update["inbox"] = Overwrite(dict(snap.values.get("inbox") or {}))
            await self._graph.aupdate_state(self.config, update, as_node=FOLD_NODE)

    _pending = 0

    @property
    def pending(self) -> int:
        """Inbox rows not yet folded, as of the last read."""
        return self._pending

