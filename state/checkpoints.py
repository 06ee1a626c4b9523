"""Loading checkpoint values quickly.

Decoding a full-retention checkpoint allocates tens of thousands of lists and millions of
ints; the cyclic garbage collector would walk them again and again (a 2 MB state took ~100 ms
instead of ~20 ms). The state is plain acyclic data that reference counting frees, so the
collector is paused while it is decoded, and what was allocated meanwhile goes straight to the
oldest generation when it resumes: otherwise the first allocation after it would start a full
collection over the whole new state (~70 ms of a 50-series read on a busy machine).

A long-running process (the scheduler, ``graph.runner.settle_gc``) can freeze its warm heap
once (``freeze_heap``) so that full collections skip it; the pause then keeps that freeze as it
is, and what was allocated meanwhile stays young and is collected as usual (full collections
skip the frozen heap, so they walk little more than that state).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from state.fingerprint import rekey_patterns
from state.reducers import merge_pattern
from state.schema import CHANNELS

heap_frozen = False  # set by freeze_heap (gc.get_freeze_count() walks the whole frozen list)


def freeze_heap() -> bool:
    """Once per process: a full collection, then everything still alive frozen (``gc.freeze``:
    into the permanent generation, which collections skip). True if this call froze it.

    Frozen objects are still freed when their last reference goes; only a reference cycle
    among them that becomes garbage later is never collected. This freezes once, right after
    a full collection (no garbage is frozen), and ``gc_paused`` then freezes nothing more, so
    what can never be collected is bounded by the heap alive at that one moment."""
    global heap_frozen
    if heap_frozen:
        return False
    gc.collect()
    gc.freeze()
    heap_frozen = True
    return True


def thaw_heap() -> None:
    """Undo ``freeze_heap`` (``gc.unfreeze``: the frozen objects back into the oldest
    generation), so that the next ``freeze_heap`` freezes again: for tests and benchmarks that
    play several fresh processes in one."""
    global heap_frozen
    gc.unfreeze()
    heap_frozen = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if not heap_frozen:
                # freeze + unfreeze: every tracked object into the oldest generation, without
                # counting it towards the next full collection (nothing is left frozen)
                gc.freeze()
                gc.unfreeze()
            # else unfreeze would thaw the heap freeze_heap froze, and freezing without it
            # would freeze this state, and whatever else is alive now, for good
            gc.enable()


async def load_values(saver: BaseCheckpointSaver, config: RunnableConfig
                      ) -> tuple[str | None, dict[str, Any], str | None]:
    """(checkpoint id, state channel values, checkpoint timestamp) of a checkpoint; the newest
    one unless ``config`` names a ``checkpoint_id``. (None, {}, None) if there is none."""
    with gc_paused():
        tup = await saver.aget_tuple(config)
    if tup is None:
        return None, {}, None
    values = {k: v for k, v in tup.checkpoint["channel_values"].items() if k in CHANNELS}
    if values.get("error_patterns"):  # patterns stored under older fingerprint rules
        values["error_patterns"] = rekey_patterns(values["error_patterns"], merge_pattern)
    return tup.config["configurable"]["checkpoint_id"], values, tup.checkpoint.get("ts")
