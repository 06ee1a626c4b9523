"""Linear threads' checkpoints stored as versioned entries (``state.backends.tree``): every
retained checkpoint loads exactly as written, prune keeps exactly the entries they use, the
compare-and-swap still refuses forks, old-layout rows still load, and a write that fails
half-way leaves the state as it was."""

from __future__ import annotations

import copy
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from graph.runner import tick
from state import PerformanceMetric, SharedState
from state.backends import Backend, make_backend
from state.backends.history import ForkRefused, keep_linear
from state.backends.tree import ROW_PREFIX, SPLIT_MIN, TABLE
from tests.conftest import make_url, postgres_schema

THREAD = "0b7a3a9e-7d0f-4c55-9a34-5d6c8e1f2a10"


class S(TypedDict, total=False):
    metrics: dict
    small: dict
    flag: Any


def graph_on(backend: Backend):
    builder = StateGraph(S)
    builder.add_node("w", lambda state: {})
    builder.add_edge(START, "w")
    builder.add_edge("w", END)
    return builder.compile(checkpointer=backend.checkpointer)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def tree_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        yield make_url("sqlite", tmp_path)


async def opened(url: str) -> Backend:
    backend = make_backend(url)
    await backend.setup()
    keep_linear(backend.checkpointer, THREAD)
    return backend


def cfg(checkpoint_id: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": THREAD, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def evolve(rng: random.Random, state: dict[str, Any], step: int) -> dict[str, Any]:
    """The next state, as the reducers make it: changed parts are new objects, the rest the
    same objects; sometimes an equal copy (new objects, same content)."""
    metrics = dict(state.get("metrics") or {})
    for _ in range(rng.randint(0, 3)):
        name = f"s{rng.randint(0, 30)}"
        old = metrics.get(name)
        tiers = dict(old["tiers"]) if old else {}
        buckets = dict(tiers.get("1m") or {})
        start = 60 * (step + rng.randint(0, 40))
        buckets[start] = [rng.randint(1, 9), rng.random(), [1, rng.randint(0, 5)]]
        if len(buckets) > 30:
            del buckets[min(buckets)]
        tiers["1m"] = buckets
        if rng.random() < 0.3:
            tiers["1d"] = {86400 * step: [step, float(step)]}
        metrics[name] = {"unit": rng.choice(["ms", None]), "tiers": tiers}
    if metrics and rng.random() < 0.1:
        del metrics[rng.choice(sorted(metrics))]
    if rng.random() < 0.1:
        metrics = copy.deepcopy(metrics)  # equal, all new objects
    small = dict(state.get("small") or {})
    size = rng.choice([3, SPLIT_MIN - 1, SPLIT_MIN + 4])  # crosses the split threshold
    small = {f"k{i}": small.get(f"k{i}", i) for i in range(size)}
    small["k0"] = rng.choice([1, 1.0, "1", [1], {"a": 1}, None])  # type changes too
    if rng.random() < 0.2:
        small = dict(reversed(list(small.items())))  # order alone changes
    return {"metrics": metrics, "small": small, "flag": rng.choice([None, step, {"s": step}])}


def encoded(backend: Backend, values: dict[str, Any]) -> bytes:
    """The serde bytes of values: equal bytes = equal content, types and key order."""
    return backend.checkpointer.serde.dumps_typed(values)[1]


async def entry_rows(backend: Backend, thread_id: str = THREAD) -> list[tuple[str, str | None]]:
    from state.backends.aiodb import SqliteAsyncDb

    if backend.url.startswith("sqlite"):
        async with SqliteAsyncDb(backend._write, backend._write_lock).turn() as sql:  # type: ignore[attr-defined]
            return [(b, d) for b, d in await sql.all(
                f"SELECT born, died FROM {TABLE} WHERE thread_id=?", (thread_id,))]
    from state.backends.aiodb import PostgresAsyncDb

    async with PostgresAsyncDb(backend._pool).turn() as sql:  # type: ignore[attr-defined]
        return [(b, d) for b, d in await sql.all(
            f"SELECT born, died FROM {TABLE} WHERE thread_id=?", (thread_id,))]


async def retained(backend: Backend) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"]
            async for t in backend.checkpointer.alist(cfg())]


async def test_every_retained_checkpoint_loads_as_written_and_prune_keeps_exactly_what_they_use(
        tree_url: str) -> None:
    rng = random.Random(20)
    backend = await opened(tree_url)
    follower = await opened(tree_url)  # another process reading each newest checkpoint, or
    try:                               # every few: it reads only the entries born since
        graph = graph_on(backend)
        written: dict[str, bytes] = {}
        state: dict[str, Any] = {}
        for step in range(1, 80):
            state = evolve(rng, state, step)
            config = await graph.aupdate_state(cfg(), state, as_node="w")
            written[config["configurable"]["checkpoint_id"]] = encoded(backend, state)
            if step % 7 == 0:
                await backend.prune_checkpoints(THREAD, 6)
            if rng.random() < 0.6:
                newest = await follower.checkpointer.aget_tuple(cfg())
                assert newest is not None
                assert encoded(follower, newest.checkpoint["channel_values"]) == \
                    written[config["configurable"]["checkpoint_id"]]
        kept = await retained(backend)
        assert 6 <= len(kept) < 13
        rows = await entry_rows(backend)
        # no leak: every entry is valid at some kept checkpoint; no dangling: each loads whole
        assert all(any(b <= c and (d is None or c < d) for c in kept) for b, d in rows)
        for checkpoint_id in kept:
            tup = await backend.checkpointer.aget_tuple(cfg(checkpoint_id))
            assert tup is not None
            assert encoded(backend, tup.checkpoint["channel_values"]) == written[checkpoint_id]
    finally:
        await backend.aclose()
        await follower.aclose()
    fresh = await opened(tree_url)  # a new process: nothing cached
    try:
        for checkpoint_id in reversed(kept):  # oldest first: nothing in common with a cache
            tup = await fresh.checkpointer.aget_tuple(cfg(checkpoint_id))
            assert tup is not None
            assert encoded(fresh, tup.checkpoint["channel_values"]) == written[checkpoint_id]
        listed = [t async for t in fresh.checkpointer.alist(cfg())]
        assert [encoded(fresh, t.checkpoint["channel_values"]) for t in listed] == \
            [written[c] for c in kept]
    finally:
        await fresh.aclose()


async def test_a_fork_is_refused_and_writes_no_entry(tree_url: str) -> None:
    backend = await opened(tree_url)
    try:
        graph = graph_on(backend)
        first = await graph.aupdate_state(cfg(), {"small": {"a": 1}}, as_node="w")
        await graph.aupdate_state(cfg(), {"small": {"a": 2}}, as_node="w")
        before = await entry_rows(backend)
        with pytest.raises(ForkRefused):
            await graph.aupdate_state(first, {"small": {"a": 3}}, as_node="w")
        assert await entry_rows(backend) == before
        assert (await graph.aget_state(cfg())).values["small"] == {"a": 2}
    finally:
        await backend.aclose()


async def test_a_write_that_fails_after_its_entries_leaves_the_state_as_it_was(
        tree_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = await opened(tree_url)
    try:
        graph = graph_on(backend)
        big = {f"k{i}": i for i in range(40)}
        await graph.aupdate_state(cfg(), {"small": big}, as_node="w")
        before = await entry_rows(backend)
        entries = backend.checkpointer.entries  # type: ignore[attr-defined]
        write = entries.write

        async def crash(*args: Any) -> None:  # the entries written, the checkpoint row not
            await write(*args)
            raise OSError("disk gone")

        monkeypatch.setattr(entries, "write", crash)
        with pytest.raises(OSError):
            await graph.aupdate_state(cfg(), {"small": {**big, "k1": -1}}, as_node="w")
        monkeypatch.setattr(entries, "write", write)
        assert await entry_rows(backend) == before  # rolled back with the checkpoint
        assert (await graph.aget_state(cfg())).values["small"] == big
        await graph.aupdate_state(cfg(), {"small": {**big, "k2": -2}}, as_node="w")
        assert (await graph.aget_state(cfg())).values["small"] == {**big, "k2": -2}
    finally:
        await backend.aclose()
    fresh = await opened(tree_url)
    try:
        assert (await graph_on(fresh).aget_state(cfg())).values["small"] == {**big, "k2": -2}
    finally:
        await fresh.aclose()


async def test_old_layout_checkpoints_still_load_and_new_ones_go_on_from_them(
        tmp_path: Path) -> None:
    url = make_url("sqlite", tmp_path)
    backend = await opened(url)
    graph = graph_on(backend)
    written = {}
    try:
        backend.checkpointer.tree = False  # type: ignore[attr-defined]  # as before: whole rows
        for i in range(3):
            values = {"small": {f"k{j}": i for j in range(30)}, "flag": i}
            c = await graph.aupdate_state(cfg(), values, as_node="w")
            written[c["configurable"]["checkpoint_id"]] = values
    finally:
        await backend.aclose()
    backend = await opened(url)  # today's saver
    graph = graph_on(backend)
    try:
        for i in range(3, 6):
            values = {"small": {f"k{j}": i if j % 2 else 0 for j in range(30)}, "flag": i}
            c = await graph.aupdate_state(cfg(), values, as_node="w")
            written[c["configurable"]["checkpoint_id"]] = values
        types = [t for (t,) in backend._read.execute(  # type: ignore[attr-defined]
            "SELECT type FROM checkpoints WHERE checkpoint_ns='' ORDER BY checkpoint_id")]
        assert types[:3] == ["msgpack"] * 3 and all(t.startswith(ROW_PREFIX) for t in types[3:])
        for checkpoint_id, values in written.items():
            assert (await graph.aget_state(cfg(checkpoint_id))).values == values
    finally:
        await backend.aclose()


async def test_ticks_of_the_system_graph_time_travel_exactly_and_write_little(
        tree_url: str) -> None:
    """The real tick (reducers, compact, LangGraph) over a state with many series: every
    retained checkpoint, read by a process that cached nothing, equals what the writing
    process read back right after writing it (so no value was changed in place)."""
    async with SharedState.open(tree_url, producer="t") as shared:
        await shared.add_performance_metrics([
            PerformanceMetric(source_agent=f"a{i % 4}", name=f"m{i % 40}", value=float(i),
                              timestamp=shared.clock() - 3600 * (i % 50)) for i in range(4000)])
        await shared.flush()
        saver = shared.backend.checkpointer
        seen: dict[str, bytes] = {}
        for i in range(12):
            if i % 3 == 0:
                await shared.add_performance_metric(
                    PerformanceMetric(source_agent="a1", name="m3", value=float(i)))
            await tick(shared)
            tup = await saver.aget_tuple(shared.config)
            assert tup is not None
            seen[tup.config["configurable"]["checkpoint_id"]] = saver.serde.dumps_typed(
                tup.checkpoint["channel_values"])[1]
        latest = max(seen)
        rows = await entry_rows(shared.backend, shared.thread_id)
        born_last = sum(1 for b, _ in rows if b == latest)
        assert 0 < born_last < len(rows) / 20  # an idle tick writes a small part of the state
    async with SharedState.open(tree_url, producer="t2") as shared:
        saver = shared.backend.checkpointer
        for checkpoint_id, data in seen.items():
            conf = {"configurable": {**shared.config["configurable"],
                                     "checkpoint_id": checkpoint_id}}
            tup = await saver.aget_tuple(conf)
            assert tup is not None
            assert saver.serde.dumps_typed(tup.checkpoint["channel_values"])[1] == data
