"""The dashboard's one data module: read the state, shape it for the views, forward writes.

Reads open ``SharedState`` read-only on the configured URL and load either the latest state
(last checkpoint with unfolded inbox rows laid over it, exactly what ``get_*`` returns) or one
retained checkpoint of the system thread (time travel). Every number goes through the named
read functions of ``state.queries``, so the dashboard, the CLI and the API agree.

What costs is cached in the Streamlit process, shared by every session: a checkpoint's values
by checkpoint id (while no tick commits a new one, a re-read reads only the inbox), each value
derived from a snapshot (``_memo``, once per snapshot), and the costly derivations (window
summaries, sparklines) by the channels they read and the buckets their window covers
(``_derived``), so they are computed again only when those channels or buckets change. Writes
(insight lifecycle actions, edit config, request an optimization cycle) pass the role gate
(``dashboard.auth.require``) and go through the SharedState API, which validates them. The
pages import only this module (and ``auth`` for who is signed in): no SQL, no backend, no
checkpointer outside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import json
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import streamlit as st
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base.id import UUID as CheckpointUUID

from dashboard import auth
from state import lifecycle, queries, sketch
from state.api import SharedState
from state.checkpoints import gc_paused, load_values
from state.config import RulesConfig, flatten
from state.models import ACTIONABLE, InvalidInput
from state.schema import TIER_WIDTH
from state.settings import database_url

__all__ = ["PRIORITIES", "InvalidInput", "Snapshot", "Unavailable"]

# Priorities the views count and filter as something to act on ("info" insights, such as an
# import that completed, are listed but never counted as open work).
PRIORITIES = ACTIONABLE

PRODUCER = "dashboard"
LIVE_TTL_S = 1.0  # the live state is re-read at most once a second, whatever the sessions
CHECKPOINT_LIST_TTL_S = 30.0  # one new checkpoint per tick; listing reads every row
WINDOWS: dict[str, float] = {"1 h": 1, "24 h": 24, "7 d": 24 * 7}
_UUID_EPOCH = 0x01B21DD213814000  # 1582-10-15 in 100 ns steps before the Unix epoch

T = TypeVar("T")


@dataclass(frozen=True)
class Snapshot:
    """One loaded state. ``state`` is shared between sessions by the cache: never mutate it."""

    url: str
    state: dict[str, Any] = field(repr=False)  # huge: keep it out of task reprs and logs
    now: float  # the "now" of every view: load time, or the checkpoint's time when historic
    checkpoint_id: str | None
    live: bool
    pending: int
    loaded_in_s: float
    # values derived from this snapshot (shared by the views of one render and by every
    # session reading the same cached snapshot); see ``_memo``
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)
    # where ``_derived`` keeps values that outlive the snapshot (None: not kept)
    derived: _Derived | None = field(default=None, compare=False, repr=False)


class Unavailable(Exception):
    """The database cannot be read: missing (the dashboard never creates one), unreachable or
    refused. The message says what was wrong and what to do; the pages show it instead of a
    traceback."""


def _memo(snap: Snapshot, key: Any, make: Callable[[], T]) -> T:
    """``make()`` computed once per snapshot and key (a snapshot never changes)."""
    try:
        return snap.memo[key]
    except KeyError:
        return snap.memo.setdefault(key, make())


class _Derived:
    """Derived values of one database that outlive a snapshot: each kept with the channel
    objects it was made from and its clock key (the newest ``MAX_DERIVED``, least recently
    used dropped). Channels are never mutated (a new checkpoint or overlay makes new ones),
    so "same objects" means "same inputs"."""

    MAX_DERIVED = 256

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: OrderedDict[Any, tuple[tuple[Any, ...], Any, Any]] = OrderedDict()

    def get(self, key: Any, inputs: tuple[Any, ...], clock: Any) -> tuple[bool, Any]:
        with self.lock:
            hit = self.values.get(key)
            if hit is None or hit[1] != clock or len(hit[0]) != len(inputs) \
                    or any(a is not b for a, b in zip(hit[0], inputs, strict=True)):
                return False, None
            self.values.move_to_end(key)
            return True, hit[2]

    def put(self, key: Any, inputs: tuple[Any, ...], clock: Any, value: Any) -> None:
        with self.lock:
            self.values[key] = (inputs, clock, value)
            self.values.move_to_end(key)
            while len(self.values) > self.MAX_DERIVED:
                self.values.popitem(last=False)


def _derived(snap: Snapshot, key: Any, channels: tuple[str, ...], clock: Any,
             make: Callable[[], T]) -> T:
    """``make()`` once per snapshot, and across snapshots while the ``channels`` it reads are
    the same objects and ``clock`` (what of the snapshot's time it depends on, e.g. the
    buckets a window covers) is equal."""
    def once() -> T:
        if snap.derived is None:
            return make()
        inputs = tuple(snap.state.get(c) for c in channels)
        found, value = snap.derived.get(key, inputs, clock)
        if not found:
            value = make()
            snap.derived.put(key, inputs, clock, value)
        return value

    return _memo(snap, key, once)


def window_clock(snap: Snapshot, hours: float) -> tuple[str, int, int]:
    """What a window's numbers depend on of the clock: its tier, first bucket and newest
    bucket (``queries.window_agg`` sums the buckets started in ``[start, now]``)."""
    tier = queries.tier_for_window(snap.state, hours)
    width = TIER_WIDTH[tier]
    return tier, queries._window_start(snap.now, hours, width), int(snap.now) // width


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code (Streamlit's script thread or a test)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def configured_url(url: str | None = None) -> str:
    return database_url(url)


def display_url(url: str) -> str:
    """The URL with any password masked (for the sidebar)."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# -- loading ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _open(url: str, *, read_only: bool = True) -> AsyncIterator[SharedState]:
    """``SharedState`` on an existing database only: a mistyped path or an unreachable server
    is ``Unavailable`` with the reason, never a new empty database."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            shared = await stack.enter_async_context(SharedState.open(
                url, producer=PRODUCER, read_only=read_only, must_exist=True))
        except (ValueError, ConnectionError, OSError, sqlite3.DatabaseError) as exc:
            raise Unavailable(f"Cannot open the state database {display_url(url)}: {exc}. "
                              "Check `--db` / `BGA_DATABASE_URL`; the dashboard only opens "
                              "an existing database (`bga run` or `bga demo` creates one) "
                              "and retries on each refresh.") from None
        yield shared


@dataclass
class _Cache:
    """What the live reads of one database keep between snapshots (see the module doc)."""

    checkpoint: dict[str, Any] = field(default_factory=dict)  # ``SharedState.read(cache=)``
    derived: _Derived = field(default_factory=_Derived)


async def _aload(url: str, checkpoint_id: str | None, cache: _Cache | None = None) -> Snapshot:
    started = time.perf_counter()
    with gc_paused():  # also around the queries' own allocations
        return await _aload_state(url, checkpoint_id, started, cache)


async def _aload_state(url: str, checkpoint_id: str | None, started: float,
                       cache: _Cache | None = None) -> Snapshot:
    async with _open(url) as shared:
        if checkpoint_id is None:
            state = await shared.read(cache=None if cache is None else cache.checkpoint)
            now = time.time()
            pending = shared.pending  # rows above the watermarks, not folded rows awaiting GC
            current = await shared.backend.latest_checkpoint_id(shared.thread_id)
        else:
            config: RunnableConfig = {"configurable": {"thread_id": shared.thread_id,
                                                       "checkpoint_ns": "",
                                                       "checkpoint_id": checkpoint_id}}
            found, state, ts = await load_values(shared.backend.checkpointer, config)
            if found is None:
                raise LookupError(f"checkpoint {checkpoint_id} is no longer retained")
            assert ts is not None  # every checkpoint carries its timestamp
            now, pending, current = _ts(ts), 0, checkpoint_id
    return Snapshot(url, state, now, current, checkpoint_id is None, pending,
                    time.perf_counter() - started,
                    derived=None if cache is None else cache.derived)


def load_uncached(checkpoint_id: str | None = None, url: str | None = None) -> Snapshot:
    """Read the state now (no cache): the latest, or the retained checkpoint ``checkpoint_id``."""
    return run_sync(_aload(configured_url(url), checkpoint_id))


@st.cache_resource(max_entries=4, show_spinner=False)
def _cache(url: str) -> _Cache:
    return _Cache()


@st.cache_resource(ttl=LIVE_TTL_S, max_entries=4, show_spinner=False)
def _live(url: str) -> Snapshot:
    return run_sync(_aload(url, None, _cache(url)))


@st.cache_resource(max_entries=16, show_spinner=False)
def _historic(url: str, checkpoint_id: str) -> Snapshot:
    return run_sync(_aload(url, checkpoint_id))  # a checkpoint never changes


def load(checkpoint_id: str | None = None, url: str | None = None) -> Snapshot:
    """The latest state (cached for ``LIVE_TTL_S``) or a retained checkpoint (cached)."""
    url = configured_url(url)
    return _live(url) if checkpoint_id is None else _historic(url, checkpoint_id)


class _SkipValues:
    """Serde stand-in for listing checkpoints: the list needs ids and metadata, not the values,
    and decoding every retained checkpoint would cost a full state load each."""

    def loads_typed(self, data: tuple[str, bytes]) -> dict[str, Any]:
        return {}


def _id_time(checkpoint_id: str) -> float | None:
    """Unix time encoded in a LangGraph checkpoint id (a version-6 UUID)."""
    try:
        uid = CheckpointUUID(checkpoint_id)
    except ValueError:
        return None
    return (uid.time - _UUID_EPOCH) / 1e7 if uid.version == 6 else None


async def _acheckpoints(url: str, limit: int | None, known: list[dict[str, Any]]
                       ) -> list[dict[str, Any]]:
    """The newest ``limit`` retained checkpoints (None: all), newest first: those newer than
    the newest of ``known`` read now, the older ones taken from ``known``."""
    seen = {c["checkpoint_id"] for c in known}
    out = []
    async with _open(url) as shared:
        lister = copy.copy(shared.backend.checkpointer)  # same connection, cheap serde
        lister.serde = _SkipValues()  # type: ignore[assignment]
        # naming the root namespace lets SQLite walk the primary key newest-first and stop at
        # ``limit``, instead of sorting every row (blobs included) of the thread
        root: RunnableConfig = {"configurable": {"thread_id": shared.thread_id,
                                                 "checkpoint_ns": ""}}
        async for tup in lister.alist(root, limit=limit):
            conf, meta = tup.config["configurable"], tup.metadata or {}
            if conf["checkpoint_id"] in seen:  # newest first: the rest is known
                out += [c for c in known if c["checkpoint_id"] <= conf["checkpoint_id"]]
                break
            out.append({"checkpoint_id": conf["checkpoint_id"],
                        "at": _id_time(conf["checkpoint_id"]), "step": meta.get("step"),
                        "source": meta.get("source"), "tick": meta.get("tick")})
    out.sort(key=lambda c: c["checkpoint_id"], reverse=True)
    return out[:limit] if limit else out


class _Listing:
    """The checkpoints listed last, per database and ``limit``: listing reads each row (a few
    MB at full retention), so only checkpoints newer than those are read again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[int | None, list[dict[str, Any]]] = {}


@st.cache_resource(max_entries=8, show_spinner=False)
def _listing(url: str) -> _Listing:
    return _Listing()


@st.cache_resource(ttl=CHECKPOINT_LIST_TTL_S, max_entries=8, show_spinner=False)
def _checkpoint_list(url: str, limit: int | None, newest: str | None, keep: int
                     ) -> list[dict[str, Any]]:
    listing = _listing(url)
    with listing.lock:
        known = listing.rows.get(limit, [])
        rows = run_sync(_acheckpoints(url, limit, known))[:keep]
        listing.rows[limit] = rows
    return rows


def checkpoints(url: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Retained checkpoints of the system thread (the newest ``limit``, or all), newest first,
    with their time. Listing reads each checkpoint row (a few MB at full retention) without
    decoding it, about 7 ms a checkpoint: a list is kept per newest checkpoint, and after a
    tick only the new checkpoints are read."""
    url = configured_url(url)
    snap = load(url=url)
    keep = _memo(snap, "retained", lambda: queries.config_of(snap.state).retention.checkpoints)
    return _checkpoint_list(url, limit, snap.checkpoint_id, keep)


def refresh() -> None:
    """Forget cached reads (after a write, or on "Refresh now")."""
    _live.clear()  # the checkpoint and derived caches stay: they are keyed by what they read
    _checkpoint_list.clear()
    _historic.clear()


# -- writes (through the SharedState API) -------------------------------------------------------
# Each write passes the role gate first (``auth.require``): a control drawn only for operators,
# a stale or forged widget event and a direct call all meet the same check, and the user it
# returns is recorded with the write.


async def _write_as(url: str, action: str, *args: Any, **kwargs: Any) -> Any:
    async with _open(url, read_only=False) as shared:
        return await getattr(shared, action)(*args, **kwargs)


def mark_acted_upon(insight_id: str, url: str | None = None) -> bool:
    """Acknowledge one insight; False (nothing written) when the insight does not exist."""
    return bool(update_insights([insight_id], "acknowledge", url=url))


def update_insights(insight_ids: list[str], action: str, duration_s: float | None = None,
                    url: str | None = None) -> list[str]:
    """A lifecycle action on many insights (one transaction), recorded as done by the signed-in
    user (operators only); insights gone meanwhile are skipped. Returns the ids changed."""
    by = auth.require("operator")
    done = run_sync(_write_as(configured_url(url), "update_insights", list(insight_ids),
                              action, by=by, duration_s=duration_s, missing_ok=True))
    refresh()
    return list(done)


def mute_insight_type(insight_type: str, duration_s: float | None,
                      url: str | None = None) -> None:
    """Mute every insight of a type for ``duration_s`` (None: unmute); operators only."""
    by = auth.require("operator")
    run_sync(_write_as(configured_url(url), "mute_insight_type", insight_type, duration_s,
                       by=by))
    refresh()


def mark_insights_seen(url: str | None = None) -> None:
    """The session's "last looked" mark (``auth.viewer``): a viewer may keep their own."""
    auth.require("viewer")
    run_sync(_write_as(configured_url(url), "mark_insights_seen", auth.viewer()))
    refresh()


def update_config(updates: dict[str, Any], url: str | None = None) -> None:
    """Validated by the API: raises ``InvalidInput`` and writes nothing on a bad value;
    operators only, recorded as ``config_change`` in the system values."""
    by = auth.require("operator")
    run_sync(_write_as(configured_url(url), "update_config", updates, by=by))
    refresh()


def request_optimization(url: str | None = None) -> None:
    """Operators only; recorded as ``optimization_request`` in the system values."""
    by = auth.require("operator")
    run_sync(_write_as(configured_url(url), "request_optimization", by=by))
    refresh()


# -- plain data for the views -------------------------------------------------------------------


def system_values(snap: Snapshot) -> dict[str, Any]:
    return summary(snap)["values"]


def summary(snap: Snapshot) -> dict[str, Any]:
    return _memo(snap, "summary",
                 lambda: queries.system_state(snap.state, snap.now, snap.pending))


def is_internal(series: str, snap: Snapshot | None = None) -> bool:
    """A series of the system's own runs (``rules.internal_series`` of the snapshot's config,
    or the default; hidden unless asked for)."""
    if snap is None:
        globs = RulesConfig().internal_series
    else:
        globs = _memo(snap, "internal_globs",
                      lambda: queries.config_of(snap.state).rules.internal_series)
    return queries.is_internal_series(series, globs)


def _schedule(agent: dict[str, Any]) -> str:
    if agent.get("schedule"):
        return f"cron {agent['schedule']}"
    if agent.get("interval_s"):
        return f"every {agent['interval_s']:g} s"
    return "—"


def agents(snap: Snapshot, *, metrics: bool = True) -> list[dict[str, Any]]:
    """One row per agent with the one liveness verdict (``queries.agent_liveness``, judged at
    the snapshot's time, so it is right even when no ticker is running); ``status`` never
    contradicts it (a dead agent's status is ``dead``). ``metrics=False`` leaves out the
    per-series summaries (``metrics`` empty, ``activity`` zeros): the costly part with hundreds
    of series, not needed by a liveness table."""
    errors = _memo(snap, "errors_7d", lambda: queries.error_patterns(
        snap.state, snap.now, time_window_hours=24 * 7))
    per_agent = _agent_series(snap) if metrics else {}
    judged = queries.liveness(snap.state, snap.now)["agents"]
    rows = []
    for a in queries.agent_list(snap.state, snap.now):
        last_error = (a["heartbeat"] or {}).get("last_error")
        if not last_error:
            own = [p for p in errors if a["agent_id"] in p["source_agents"]]
            newest = max(own, key=lambda p: p["last_seen"], default=None)
            if newest is not None:
                last_error = f"{newest['error_type']}: {newest['sample_message']}"
        own = per_agent.get(a["agent_id"], [])
        activity = [sum(c) for c in zip(*(m["activity"] for m in own), strict=True)] \
            or [0] * len(_bucket_starts(snap, 1))
        rows.append({**a, "schedule_text": _schedule(a), "liveness_now": a["liveness"],
                     "verdict": a["liveness"], "heartbeat_age_s": judged[a["agent_id"]]["age_s"],
                     "last_error": last_error or "",
                     "metrics": own, "activity": activity})
    return rows


def _agent_series(snap: Snapshot) -> dict[str, list[dict[str, Any]]]:
    """Agent -> its series' last-hour summaries with their activity."""
    def make() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for name, s in performance(snap, 1)["series"].items():
            out.setdefault(s["source_agent"], []).append(_with_activity(snap, name, s))
        return out

    return _derived(snap, "agent_series", SERIES_INPUTS, window_clock(snap, 1), make)


def scheduler(snap: Snapshot) -> dict[str, Any]:
    """Is anything ticking? (``queries.scheduler_liveness``: running, down or never)."""
    return queries.liveness(snap.state, snap.now)["scheduler"]


def _with_activity(snap: Snapshot, series: str, stats: dict[str, Any]) -> dict[str, Any]:
    """A series' last-hour summary plus its sample count per bucket (``activity``), read off
    the buckets without decoding a sketch (``spark`` gives the p50 line, on demand)."""
    buckets = ((snap.state.get("metrics") or {}).get(series) or {}).get("tiers", {}).get(
        queries.tier_for_window(snap.state, 1), {})
    return {"series": series, **stats,
            "activity": [int(buckets[b][sketch.COUNT]) if b in buckets else 0
                         for b in _bucket_starts(snap, 1)]}


def spark(snap: Snapshot, series: str) -> list[float]:
    """p50 per bucket over the last hour, oldest first (the line on a metric card)."""
    return _derived(snap, ("spark", series), SERIES_INPUTS, window_clock(snap, 1), lambda: [
        p["p50"] for p in queries.series_points(snap.state, series, 1, snap.now)])


def processes(snap: Snapshot) -> list[dict[str, Any]]:
    return queries.processes(snap.state, snap.now)


def liveness_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = {"active": 0, "stale": 0, "dead": 0, "unknown": 0}
    for r in rows:
        counts[r["liveness_now"]] += 1
    return counts


SERIES_INPUTS = ("metrics", "config")  # what a series' numbers are derived from


def performance(snap: Snapshot, hours: float) -> dict[str, Any]:
    return _derived(snap, ("performance", hours), SERIES_INPUTS, window_clock(snap, hours),
                    lambda: queries.performance_summary(snap.state, hours, snap.now))


def series_points(snap: Snapshot, series: str, hours: float) -> list[dict[str, Any]]:
    return queries.series_points(snap.state, series, hours, snap.now)


def bucket_width(snap: Snapshot, hours: float) -> int:
    """Width in seconds of the buckets that serve a window of ``hours``."""
    return TIER_WIDTH[queries.tier_for_window(snap.state, hours)]


def last_sample(snap: Snapshot, series: str) -> float | None:
    """Start of the newest bucket holding a sample of ``series`` (any tier), or None."""
    tiers = ((snap.state.get("metrics") or {}).get(series) or {}).get("tiers") or {}
    return max((float(b) for buckets in tiers.values() for b in buckets), default=None)


def _bucket_starts(snap: Snapshot, hours: float) -> list[int]:
    """Start of every bucket of the tier that serves a window of ``hours``, oldest first."""
    width = TIER_WIDTH[queries.tier_for_window(snap.state, hours)]
    current = int(snap.now) - int(snap.now) % width
    n = max(1, min(int(hours * 3600 // width), 168))
    return [current - (n - 1 - i) * width for i in range(n)]


def error_patterns(snap: Snapshot, hours: float) -> list[dict[str, Any]]:
    """Patterns seen in the window, each with ``trend``: its count per bucket, oldest first."""
    return _memo(snap, ("error_patterns", hours), lambda: _error_patterns(snap, hours))


def _error_patterns(snap: Snapshot, hours: float) -> list[dict[str, Any]]:
    tier = queries.tier_for_window(snap.state, hours)
    starts = _bucket_starts(snap, hours)
    raw = snap.state.get("error_patterns") or {}
    out = []
    for p in queries.error_patterns(snap.state, snap.now, time_window_hours=hours):
        buckets = raw[p["pattern_id"]]["tiers"].get(tier, {})
        out.append({**p, "trend": [int(buckets.get(b, 0)) for b in starts],
                    "trend_bucket_s": TIER_WIDTH[tier]})
    return out


def insights(snap: Snapshot, priority: str | None = None, insight_type: str | None = None,
             acted_upon: bool | None = None, status: list[str] | None = None
             ) -> list[dict[str, Any]]:
    """Active ones (open, regressed) first, then by priority and recency (as
    ``queries.insight_list``), each with its lifecycle as of the snapshot."""
    key = ("insights", priority, insight_type, acted_upon, tuple(status or ()) or None)
    return _memo(snap, key, lambda: sorted(
        queries.insight_list(snap.state, priority, insight_type, acted_upon, status=status,
                             now=snap.now), key=lambda i: not i["active"]))


def insight_counts(snap: Snapshot, viewer: str) -> dict[str, Any]:
    """Counts by state and ``new`` since ``viewer`` last marked the insights seen."""
    return _memo(snap, ("insight_counts", viewer), lambda: queries.insight_counts(
        insights(snap), lifecycle.seen_at(snap.state, viewer)))


def insights_seen_at(snap: Snapshot, viewer: str) -> float | None:
    return lifecycle.seen_at(snap.state, viewer)


def type_mutes(snap: Snapshot) -> list[dict[str, Any]]:
    """Insight types muted now: type, until, by, at."""
    return lifecycle.type_mute_records(snap.state, snap.now)


def optimizations(snap: Snapshot, hours: float) -> list[dict[str, Any]]:
    return queries.recent_optimizations(snap.state, snap.now, hours=hours)


def config_values(snap: Snapshot) -> dict[str, Any]:
    return queries.config_values(snap.state)


def config_keys(snap: Snapshot) -> dict[str, Any]:
    """Current config as dotted keys -> value (what the editor edits)."""
    values = queries.config_of(snap.state).model_dump(by_alias=True, exclude_none=True)
    return dict(sorted(flatten(values).items()))


def export_document(snap: Snapshot) -> dict[str, Any]:
    return queries.export_document(snap.state)


def export_json(snap: Snapshot) -> str:
    """The export document as text (the same as ``bga export``)."""
    return json.dumps(export_document(snap), indent=1, sort_keys=True)


def channel_sizes(snap: Snapshot) -> dict[str, int]:
    """Entries per exported channel (cheap: no export document built)."""
    return {c: len(snap.state.get(c) or {}) for c in queries.EXPORTED}


# -- alert delivery (state/outbox.py) ---------------------------------------------------------


async def _alert_history(url: str, limit: int) -> dict[str, Any]:
    async with _open(url) as shared:  # an existing database only
        store = shared.backend.outbox()
        return {"messages": await store.history(limit), "counts": await store.counts()}


def alert_history(limit: int = 200, url: str | None = None) -> dict[str, Any]:
    """The newest alert messages (channel, status, tries, last error, the alerts in each) and
    counts: alerts waiting for a message, messages per status."""
    return run_sync(_alert_history(configured_url(url), limit))
