"""The retention prune (``Backend.prune_checkpoints``) in every namespace, on every backend.

The reference for what must survive is computed from the checkpoints' own parent links
(a subgraph call goes with the root checkpoint it started from), not from the time order of
ids that the prune itself relies on.
"""

from __future__ import annotations

import operator
import sqlite3
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, TypedDict
from urllib.parse import unquote

import pytest
from langgraph.graph import END, START, StateGraph

from state.backends import Backend, make_backend
from state.backends.history import prune_plan
from state.backends.sqlite import path_from_url
from state.schema import SYSTEM_THREAD, thread_uuid


class Outer(TypedDict, total=False):
    n: Annotated[int, operator.add]
    seen: int


class Seen(TypedDict, total=False):
    seen: int


class Inner(Seen, total=False):
    calls: Annotated[int, operator.add]


def inner_graph(*, persistent: bool):
    """x -> y; ``calls`` adds up across calls when the subgraph keeps its own state."""
    sub = StateGraph(Inner, output_schema=Seen)
    sub.add_node("x", lambda s: {"calls": 1})
    sub.add_node("y", lambda s: {"seen": s["calls"]})
    sub.add_edge(START, "x")
    sub.add_edge("x", "y")
    sub.add_edge("y", END)
    return sub.compile(checkpointer=True) if persistent else sub.compile()


def outer_graph(backend: Backend, *, persistent: bool = False):
    builder = StateGraph(Outer)
    builder.add_node("sub", inner_graph(persistent=persistent))
    builder.add_edge(START, "sub")
    builder.add_edge("sub", END)
    return builder.compile(checkpointer=backend.checkpointer)


async def listing(backend: Backend, thread: str) -> list[tuple[str, str, str | None]]:
    """(namespace, checkpoint id, root checkpoint of its call) of every checkpoint."""
    return [(t.config["configurable"]["checkpoint_ns"], t.config["configurable"]["checkpoint_id"],
             (t.metadata.get("parents") or {}).get(""))
            async for t in backend.checkpointer.alist({"configurable": {"thread_id": thread}})]


def leftovers(backend: Backend) -> dict[str, int]:
    """Writes whose checkpoint is gone, and blobs no checkpoint uses (not on SQLite: it keeps
    the values in the checkpoint)."""
    url = backend.url
    if url.startswith("memory"):
        saver = backend.checkpointer
        used = {(t, ns, ch, v) for t, nss in saver.storage.items() for ns, cps in nss.items()
                for (c, _, _) in cps.values()
                for ch, v in saver.serde.loads_typed(c)["channel_versions"].items()}
        return {"writes": sum(1 for (t, ns, cid) in saver.writes
                              if cid not in saver.storage.get(t, {}).get(ns, {})),
                "blobs": sum(1 for k in saver.blobs if k not in used)}
    if url.startswith("sqlite"):
        with sqlite3.connect(path_from_url(url)) as conn:
            (writes,) = conn.execute(
                "SELECT count(*) FROM writes w WHERE NOT EXISTS (SELECT 1 FROM checkpoints c "
                "WHERE c.thread_id=w.thread_id AND c.checkpoint_ns=w.checkpoint_ns "
                "AND c.checkpoint_id=w.checkpoint_id)").fetchone()
        return {"writes": writes}
    if url.startswith("redis"):
        return {"writes": redis_orphan_writes(url)}
    import psycopg

    with psycopg.connect(url) as conn:
        (writes,) = conn.execute(
            "SELECT count(*) FROM checkpoint_writes w WHERE NOT EXISTS (SELECT 1 FROM "
            "checkpoints c WHERE c.thread_id=w.thread_id AND c.checkpoint_ns=w.checkpoint_ns "
            "AND c.checkpoint_id=w.checkpoint_id)").fetchone()
        (blobs,) = conn.execute(
            "SELECT count(*) FROM checkpoint_blobs b WHERE NOT EXISTS (SELECT 1 FROM "
            "checkpoints c WHERE c.thread_id=b.thread_id AND c.checkpoint_ns=b.checkpoint_ns "
            "AND c.checkpoint->'channel_versions'->>b.channel = b.version)").fetchone()
    return {"writes": writes, "blobs": blobs}


def redis_orphan_writes(url: str) -> int:
    """Hashes of pending writes (``wr:<thread>:<ns>:<id>``) whose checkpoint is gone."""
    import redis

    from state.backends.redisdb import Keys
    from state.backends.url import parse_url

    keys = Keys(parse_url(url).key_prefix)
    client = redis.Redis.from_url(url.split("?", 1)[0])
    try:
        orphans = 0
        for key in client.scan_iter(match=keys("wr") + ":*"):
            thread, ns, cid = (unquote(p) for p in key.decode()[len(keys("wr")) + 1:].split(":"))
            orphans += not client.hexists(keys("cp", thread, ns), cid)
        return orphans
    finally:
        client.close()


@pytest.fixture
async def backend(db_url: str) -> AsyncIterator[Backend]:
    """Every backend, ``memory://`` too (its prune works on InMemorySaver's dicts)."""
    backend = make_backend(db_url)
    await backend.setup()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.mark.parametrize("thread", [thread_uuid(SYSTEM_THREAD), "ordinary"])
async def test_twenty_runs_kept_to_two_leave_only_the_subgraph_calls_of_the_kept_ones(
    backend: Backend, thread: str
) -> None:
    thread = str(uuid.uuid4()) if thread == "ordinary" else thread
    graph = outer_graph(backend)
    config = {"configurable": {"thread_id": thread}}
    for _ in range(20):
        await graph.ainvoke({"n": 1}, config)
    before = await listing(backend, thread)
    per_ns = Counter("sub" if ns else "root" for ns, _, _ in before)
    assert per_ns == {"root": 60, "sub": 80}  # a run: input, start, after sub; a call: 4
    values = (await graph.aget_state(config)).values
    roots = sorted((i for ns, i, _ in before if not ns), reverse=True)
    kept_roots = set(roots[:2])
    # a root checkpoint kept, and every checkpoint of the calls that started from one
    expected = {(ns, i) for ns, i, root in before if (i if not ns else root) in kept_roots}

    pruned = await backend.prune_checkpoints(thread, 2)

    after = await listing(backend, thread)
    assert {(ns, i) for ns, i, _ in after} == expected
    assert Counter("sub" if ns else "root" for ns, _, _ in after) == {"root": 2, "sub": 4}
    assert pruned == len(before) - len(after) == 134
    assert set(leftovers(backend).values()) == {0}
    assert (await graph.aget_state(config)).values == values == {"n": 20, "seen": 1}
    history = [s async for s in graph.aget_state_history(config)]
    assert len(history) == 2 and history[-1].parent_config is None  # no dangling link
    assert (await graph.ainvoke({"n": 1}, config))["n"] == 21  # and it goes on
    assert await backend.prune_checkpoints(thread, 2) == 7  # the run before: 3 + 4
    assert len(await listing(backend, thread)) == 6


async def test_a_subgraph_with_its_own_checkpointer_keeps_its_state_through_pruning(
    backend: Backend
) -> None:
    graph = outer_graph(backend, persistent=True)
    config = {"configurable": {"thread_id": str(uuid.uuid4())}}
    for _ in range(4):
        await graph.ainvoke({"n": 1}, config)
        await backend.prune_checkpoints(config["configurable"]["thread_id"], 1)
    rows = await listing(backend, config["configurable"]["thread_id"])
    namespaces = Counter(ns for ns, _, _ in rows)
    assert namespaces[""] == 1 and namespaces["sub"] >= 1 and len(namespaces) == 2
    # the subgraph's own state (calls adds up across calls) survived every prune
    assert (await graph.ainvoke({"n": 1}, config))["seen"] == 5
    assert set(leftovers(backend).values()) == {0}


def test_the_prune_plan_keeps_what_is_still_reachable() -> None:
    # ids are time-ordered: roots 01, 05, 09; calls started from 01, from 09 and from a root
    # not saved yet; a checkpointer=True subgraph ("own") called from 01 and 05
    rows = [("", "01", None), ("", "05", None), ("", "09", None),
            ("sub:t1", "02", "01"), ("sub:t1", "03", "01"),
            ("sub:t3", "10", "09"), ("sub:t3", "11", "09"),
            ("sub:tx", "12", "xx"), ("sub:tx", "13", "xx"),
            ("own", "04", "01"), ("own", "06", "05")]
    doomed, cutoff = prune_plan(rows, 2, history=True)
    assert cutoff == "05"
    assert sorted(doomed) == [("", "01"), ("own", "04"), ("sub:t1", "02"), ("sub:t1", "03")]
    # keep_latest (aprune): the newest of every namespace, a call goes with its root
    doomed, _ = prune_plan(rows, 1, history=False)
    assert sorted(doomed) == [("", "01"), ("", "05"), ("own", "04"), ("sub:t1", "02"),
                              ("sub:t1", "03"), ("sub:t3", "10"), ("sub:tx", "12")]
    assert prune_plan(rows, 5, history=True) == ([], "01")
    assert prune_plan([], 2, history=True) == ([], None)


def test_the_prune_plan_drops_a_finished_call_older_than_every_kept_root() -> None:
    # durability="exit": the roots the calls started from were never saved, but a call that
    # ended before the oldest kept root was written belongs to a dropped step
    rows = [("", "05", None), ("", "07", None), ("sub:a", "04", "03"),
            ("sub:b", "06", "055"), ("sub:c", "08", "07")]
    doomed, _ = prune_plan(rows, 1, history=True)
    assert sorted(doomed) == [("", "05"), ("sub:a", "04"), ("sub:b", "06")]


async def test_a_thread_with_delta_channels_is_refused_by_name_and_keeps_every_checkpoint(
    backend: Backend,
) -> None:
    """Its values are rebuilt from older checkpoints' writes: no checkpoint of it may go."""
    from langgraph.checkpoint.base import empty_checkpoint

    from state.backends.history import DELTA_METADATA_KEYS, DeltaPruneRefused

    thread = f"delta-{uuid.uuid4().hex[:8]}"
    config: dict = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    for step in range(4):
        checkpoint = empty_checkpoint()
        metadata = {"source": "loop", "step": step, DELTA_METADATA_KEYS[0]: {"n": step}}
        config = await backend.checkpointer.aput(config, checkpoint, metadata, {})  # type: ignore[arg-type]
    before = await listing(backend, thread)
    assert len(before) == 4
    with pytest.raises(DeltaPruneRefused, match=thread) as refused:
        await backend.prune_checkpoints(thread, 1)
    assert isinstance(refused.value, NotImplementedError)  # as LangGraph's own savers refuse
    assert await listing(backend, thread) == before
