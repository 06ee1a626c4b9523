"""Rules of checkpoint history, shared by every saver and backend.

**Linear threads.** The shared state's thread (``system``, as ``thread_uuid`` names it, and the
thread of any ``SharedState``) must never fork: its inbox watermarks say which events are
folded, and a fold deletes the inbox rows at or below them. A write that starts from an older
checkpoint (a fork, a replay, ``update_state`` on an old checkpoint, or a writer another one
overtook) would bring back old watermarks while the rows folded since are gone: those events
would silently vanish. Our savers refuse such a write on these threads with ``ForkRefused``,
atomically with the insert (compare-and-swap). Every other thread (import jobs, any graph
served by ``langgraph dev``) behaves exactly like LangGraph's own savers: forks, replays,
time travel, rollbacks.

**Pruning.** ``prune_plan`` decides which checkpoints a prune deletes, for ``aprune``'s
``keep_latest`` (LangGraph's meaning: the newest checkpoint of every namespace) and for the
retention prune (``Backend.prune_checkpoints``: the newest ``keep`` root checkpoints, and in
subgraph namespaces everything as new as the oldest of them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from langgraph.checkpoint.base import BaseCheckpointSaver

from state.backends.base import StaleCheckpoint
from state.schema import SYSTEM_THREAD, thread_uuid

# a (thread, namespace, checkpoint id) key: a tuple, or a database row of those three columns
Key = TypeVar("Key", bound=Sequence[Any])

log = logging.getLogger(__name__)

RESTORE_HINT = ("read an older state with get_state(checkpoint_id=...) or the dashboard's "
                "'as of'; to go back to one, write it as the newest checkpoint with "
                "`bga restore FILE --force` (it keeps the inbox watermarks)")

PRUNE_STRATEGIES = ("keep_latest", "delete")
# Metadata keys of a thread whose graph uses a DeltaChannel (as langgraph-checkpoint-postgres
# detects them): its values are rebuilt from ancestors' writes, which a prune would cut.
DELTA_METADATA_KEYS = ("counters_since_delta_snapshot", "delta_writes_versioned")


class ForkRefused(StaleCheckpoint, ValueError):
    """A write to a linear-history thread from a checkpoint that is not its newest one.

    A ``ValueError`` too, so ``langgraph dev`` answers HTTP 400 with the message, not 500."""


class LinearThreads:
    """Mixin of our savers: the threads under compare-and-swap (the system thread, plus the
    thread of each ``SharedState`` opened on the saver's backend: see ``keep_linear``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.linear_threads: set[str] = {thread_uuid(SYSTEM_THREAD)}

    def is_linear(self, thread_id: str) -> bool:
        return str(thread_id) in self.linear_threads

    @staticmethod
    def check_parent(thread_id: str, latest: str | None, parent: str | None) -> None:
        """Refuse a write from ``parent`` when the thread's newest checkpoint is ``latest``."""
        if latest is not None and latest != parent:
            raise ForkRefused(
                f"thread {thread_id!r} holds the shared state and keeps a linear history: "
                f"this write starts from checkpoint {parent}, but the newest is {latest} (a "
                "fork, a replay or update_state from an older checkpoint, or a writer that "
                "another one overtook). It would undo the events folded since, whose inbox "
                f"rows are already deleted, so it is refused; {RESTORE_HINT}.")

    def refuse_copy_into(self, thread_id: str) -> None:
        if self.is_linear(thread_id):
            raise ForkRefused(
                f"cannot copy a thread into {thread_id!r}: it holds the shared state and "
                f"keeps a linear history; {RESTORE_HINT}.")

    def spare_linear(self, rows: Iterable[Key]) -> list[Key]:
        """The (thread, namespace, checkpoint) keys of a rolled-back run that may go: a
        linear thread keeps its checkpoints (what the run folded stays folded, once)."""
        rows = list(rows)
        doomed = [r for r in rows if not self.is_linear(r[0])]
        if len(doomed) < len(rows):
            log.warning("kept %d checkpoints of a rolled-back run on the shared state's "
                        "thread: its history is linear (its folded events stay folded)",
                        len(rows) - len(doomed))
        return doomed


def keep_linear(saver: BaseCheckpointSaver, thread_id: str) -> None:
    """Put ``thread_id`` under compare-and-swap on ``saver`` (if it is one of ours)."""
    if isinstance(saver, LinearThreads):
        saver.linear_threads.add(str(thread_id))


def check_strategy(thread_ids: Iterable[str], strategy: str) -> list[str]:
    """``aprune``'s arguments checked as LangGraph's PostgreSQL saver checks them."""
    if isinstance(thread_ids, str):
        raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
    if strategy not in PRUNE_STRATEGIES:
        raise ValueError(f"Unknown prune strategy: {strategy!r}")
    return [str(t) for t in thread_ids]


class DeltaPruneRefused(NotImplementedError):
    """A prune of threads whose graph uses a ``DeltaChannel``: their values are rebuilt from
    older checkpoints' writes, so no checkpoint of them can go (LangGraph's PostgreSQL saver
    refuses them too, with a ``NotImplementedError``)."""


def refuse_delta(thread_ids: Iterable[str]) -> None:
    """Raise ``DeltaPruneRefused`` naming every thread of ``thread_ids`` (those found to use
    a ``DeltaChannel``); nothing when there is none."""
    if delta := sorted(set(thread_ids)):
        raise DeltaPruneRefused(
            f"can't prune threads that use a DeltaChannel: {', '.join(delta)} (their values "
            "are rebuilt from older checkpoints' writes)")


def prune_plan(rows: Iterable[Sequence[Any]], keep: int, *, history: bool
               ) -> tuple[list[tuple[str, str]], str | None]:
    """Which checkpoints of one thread a prune deletes: (namespace, checkpoint id) pairs, and
    the oldest root checkpoint kept (None when the thread has none).

    ``rows`` are the thread's (namespace, checkpoint id, root) triples, ``root`` being the
    root checkpoint a subgraph checkpoint's call started from (metadata ``parents['']``).

    - The root namespace keeps its newest ``keep`` checkpoints.
    - A subgraph call (a namespace with a task id after ``:``) goes with the root checkpoint
      it started from once that one is saved and not kept.
    - ``history=False`` (``aprune`` keep_latest): every other namespace keeps its newest.
    - ``history=True`` (retention): every other namespace keeps what is as new as the oldest
      kept root checkpoint (ids are time-ordered), and a ``checkpointer=True`` subgraph (no
      ``:``, its state outlives each call) its newest one too.
    """
    keep = max(1, keep)
    by_ns: dict[str, list[str]] = {}
    root_of: dict[str, str | None] = {}
    for ns, checkpoint_id, root in sorted(rows, key=lambda r: (r[0], r[1]), reverse=True):
        if ns not in by_ns:
            by_ns[ns] = []
            root_of[ns] = root  # that of the namespace's newest checkpoint
        by_ns[ns].append(checkpoint_id)
    roots = by_ns.get("", [])
    kept_roots = set(roots[:keep])
    cutoff = roots[:keep][-1] if roots else None
    doomed = [("", i) for i in roots[keep:]]
    for ns, ids in by_ns.items():
        if not ns:
            continue
        call = ":" in ns
        root = root_of[ns]
        if call and root in roots and root not in kept_roots:
            doomed += [(ns, i) for i in ids]
        elif history and cutoff is not None:
            spared = set() if call else {ids[0]}
            doomed += [(ns, i) for i in ids if i < cutoff and i not in spared]
        else:
            doomed += [(ns, i) for i in ids[1:]]
    return doomed, cutoff
