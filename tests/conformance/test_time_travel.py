"""Time travel with our savers, on a small graph compiled with them directly.

On an ordinary thread forks (``update_state`` on an older checkpoint), replays
(``invoke(None, older_config)``), subgraphs and interrupts behave as with LangGraph's own
savers. On the shared state's thread the same writes are refused with ForkRefused, which says
why and what to do instead, and change nothing.
"""

from __future__ import annotations

import operator
import uuid
from types import SimpleNamespace
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from state import SharedState
from state.backends import Backend, StaleCheckpoint
from state.backends.history import ForkRefused
from state.schema import SYSTEM_THREAD, thread_uuid

SYSTEM = thread_uuid(SYSTEM_THREAD)


class Log(TypedDict):
    log: Annotated[list[str], operator.add]


def appender(name: str):
    def node(state: Log) -> dict[str, Any]:
        return {"log": [name]}

    return node


def chain(backend: Backend):
    """START -> a -> b -> c -> END, each node appending its name."""
    builder = StateGraph(Log)
    for name in "abc":
        builder.add_node(name, appender(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder.compile(checkpointer=backend.checkpointer)


def cfg(thread: str, checkpoint_id: str | None = None) -> dict:
    conf = {"thread_id": thread}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


async def history(graph, thread: str) -> list:
    return [s async for s in graph.aget_state_history(cfg(thread))]


async def after_a(graph, thread: str):
    """The checkpoint taken after node ``a`` ran (two newer ones follow it)."""
    (snap,) = [s for s in await history(graph, thread) if s.values.get("log") == ["in", "a"]]
    assert snap.next == ("b",)
    return snap


def thread_id() -> str:
    return str(uuid.uuid4())


async def test_a_fork_from_an_older_checkpoint_continues_from_the_fork(backend: Backend) -> None:
    graph = chain(backend)
    thread = thread_id()
    final = await graph.ainvoke({"log": ["in"]}, cfg(thread))
    assert final["log"] == ["in", "a", "b", "c"]
    old = await after_a(graph, thread)
    newest = (await graph.aget_state(cfg(thread))).config

    fork = await graph.aupdate_state(old.config, {"log": ["edit"]}, as_node="a")
    forked = await graph.aget_state(fork)
    assert forked.parent_config["configurable"]["checkpoint_id"] == \
        old.config["configurable"]["checkpoint_id"]
    assert forked.values["log"] == ["in", "a", "edit"] and forked.next == ("b",)
    continued = await graph.ainvoke(None, fork)
    assert continued["log"] == ["in", "a", "edit", "b", "c"]
    assert (await graph.aget_state(cfg(thread))).values["log"] == continued["log"]
    # the branch it left is still there, whole
    assert (await graph.aget_state(newest)).values["log"] == ["in", "a", "b", "c"]


async def test_a_replay_from_an_older_checkpoint_runs_the_rest_again(backend: Backend) -> None:
    graph = chain(backend)
    thread = thread_id()
    await graph.ainvoke({"log": ["in"]}, cfg(thread))
    old = await after_a(graph, thread)
    before = len(await history(graph, thread))

    replayed = await graph.ainvoke(None, old.config)

    assert replayed["log"] == ["in", "a", "b", "c"]
    after = await history(graph, thread)
    by_id = {s.config["configurable"]["checkpoint_id"]: s for s in after}
    branch, snap = [], after[0]  # walk back from the newest checkpoint to the old one
    while snap.config["configurable"]["checkpoint_id"] != old.config["configurable"][
            "checkpoint_id"]:
        branch.append(snap.values["log"])
        snap = by_id[snap.parent_config["configurable"]["checkpoint_id"]]
    assert len(after) == before + len(branch)  # all new: b and c ran again, on a new branch
    assert ["in", "a", "b", "c"] in branch and ["in", "a", "b"] in branch


class Asked(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    answer: str


class Answer(TypedDict, total=False):
    answer: str


def ask(state: Answer) -> dict[str, Any]:
    return {"answer": interrupt("which way?")}


def asking(backend: Backend):
    """START -> a -> sub (a subgraph that interrupts for an answer) -> END."""
    sub = StateGraph(Answer)
    sub.add_node("ask", ask)
    sub.add_edge(START, "ask")
    sub.add_edge("ask", END)
    builder = StateGraph(Asked)
    builder.add_node("a", appender("a"))
    builder.add_node("sub", sub.compile())
    builder.add_edge(START, "a")
    builder.add_edge("a", "sub")
    builder.add_edge("sub", END)
    return builder.compile(checkpointer=backend.checkpointer)


async def interrupt_story(graph, thread: str, *, fork: bool) -> list:
    """What a user sees of the asking graph: run to the interrupt, resume; with ``fork`` also
    resume the old interrupt again, and fork from before the subgraph and run that branch."""
    seen: list = []

    async def run(*args) -> None:  # interrupt ids are made of checkpoint ids: keep values
        out = dict(await graph.ainvoke(*args))
        if "__interrupt__" in out:
            out["__interrupt__"] = [i.value for i in out["__interrupt__"]]
        seen.append(out)

    async def look(config: dict) -> None:
        snap = await graph.aget_state(config, subgraphs=True)
        seen.append((snap.values, snap.next, [
            (t.name, [i.value for i in t.interrupts], t.state.next if t.state else None)
            for t in snap.tasks]))

    await run({"log": ["in"]}, cfg(thread))
    await look(cfg(thread))
    waiting = (await graph.aget_state(cfg(thread))).config
    await run(Command(resume="left"), cfg(thread))
    await look(cfg(thread))
    if fork:
        await run(Command(resume="right"), waiting)
        before_sub = next(s for s in await history(graph, thread) if s.next == ("sub",)
                          and s.values["log"] == ["in", "a"])
        branch = await graph.aupdate_state(before_sub.config, {"log": ["edit"]}, as_node="a")
        await run(None, branch)
        await look(cfg(thread))
        await run(Command(resume="up"), cfg(thread))
        await look(cfg(thread))
        await look(waiting)
    seen.append(len(await history(graph, thread)))
    return seen


@pytest.mark.parametrize("on_system_thread", [False, True])
async def test_subgraphs_and_interrupts_behave_as_with_langgraphs_own_saver(
    backend: Backend, on_system_thread: bool
) -> None:
    thread = SYSTEM if on_system_thread else thread_id()
    reference = SimpleNamespace(checkpointer=InMemorySaver())
    expected = await interrupt_story(asking(reference), thread, fork=not on_system_thread)
    ours = await interrupt_story(asking(backend), thread, fork=not on_system_thread)
    assert ours == expected
    assert expected[0]["__interrupt__"] == ["which way?"]
    assert expected[2] == {"log": ["in", "a"], "answer": "left"}
    if not on_system_thread:
        assert expected[-4] == {"log": ["in", "a", "edit"], "answer": "up"}


async def test_the_system_thread_refuses_a_fork_and_a_replay_and_says_why(
    backend: Backend
) -> None:
    graph = chain(backend)
    await graph.ainvoke({"log": ["in"]}, cfg(SYSTEM))
    old = await after_a(graph, SYSTEM)
    newest = await graph.aget_state(cfg(SYSTEM))
    count = len(await history(graph, SYSTEM))

    with pytest.raises(ForkRefused) as fork:
        await graph.aupdate_state(old.config, {"log": ["edit"]}, as_node="a")
    with pytest.raises(ForkRefused) as replay:
        await graph.ainvoke(None, old.config)

    for refused in (fork.value, replay.value):
        message = str(refused)
        assert isinstance(refused, StaleCheckpoint) and isinstance(refused, ValueError)
        assert SYSTEM in message and "linear history" in message
        assert "undo the events folded since" in message and "bga restore" in message
        assert old.config["configurable"]["checkpoint_id"] in message
        assert newest.config["configurable"]["checkpoint_id"] in message
    after = await graph.aget_state(cfg(SYSTEM))
    assert after.config == newest.config and after.values == newest.values
    assert len(await history(graph, SYSTEM)) == count
    # from the newest checkpoint it goes on as always
    moved = await graph.aupdate_state(newest.config, {"log": ["edit"]}, as_node="c")
    assert (await graph.aget_state(moved)).values["log"] == ["in", "a", "b", "c", "edit"]
    assert (await graph.ainvoke({"log": ["again"]}, cfg(SYSTEM)))["log"][-4:] == \
        ["again", "a", "b", "c"]


async def test_a_shared_state_on_another_thread_guards_that_thread(saver_url: str) -> None:
    async with SharedState.open(saver_url, producer="t", thread_id="staging") as shared:
        assert shared.thread_id != SYSTEM
        graph = chain(shared.backend)
        await graph.ainvoke({"log": ["in"]}, shared.config)
        old = await after_a(graph, shared.thread_id)
        with pytest.raises(ForkRefused, match="linear history"):
            await graph.aupdate_state(old.config, {"log": ["x"]}, as_node="a")
        other = thread_id()  # and only that one
        await graph.ainvoke({"log": ["in"]}, cfg(other))
        fork = await graph.aupdate_state((await after_a(graph, other)).config, {"log": ["x"]},
                                         as_node="a")
        assert (await graph.aget_state(fork)).values["log"] == ["in", "a", "x"]


async def test_rolling_back_runs_spares_the_system_thread_and_copies_never_land_on_it(
    backend: Backend
) -> None:
    graph = chain(backend)
    saver = backend.checkpointer
    run = str(uuid.uuid4())
    user = thread_id()
    for thread in (user, SYSTEM):
        await graph.ainvoke({"log": ["in"]}, {**cfg(thread), "metadata": {"run_id": run}})
    system_before = [s.config for s in await history(graph, SYSTEM)]
    assert len(system_before) == 5 and len(await history(graph, user)) == 5

    await saver.adelete_for_runs([run])

    assert await history(graph, user) == []  # rolled back like LangGraph's savers do
    assert [s.config for s in await history(graph, SYSTEM)] == system_before
    with pytest.raises(ForkRefused, match="cannot copy a thread into"):
        await saver.acopy_thread(user, SYSTEM)
    copy = thread_id()
    await saver.acopy_thread(SYSTEM, copy)  # out of it is fine, and the copy forks freely
    assert (await graph.aget_state(cfg(copy))).values["log"] == ["in", "a", "b", "c"]
    fork = await graph.aupdate_state((await after_a(graph, copy)).config, {"log": ["x"]},
                                     as_node="a")
    assert (await graph.aget_state(fork)).values["log"] == ["in", "a", "x"]
    assert [s.config for s in await history(graph, SYSTEM)] == system_before
