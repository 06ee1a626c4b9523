"""Loading checkpoint values quickly.

Decoding a full-retention checkpoint allocates tens of thousands of lists and millions of
ints; the cyclic garbage collector would walk them again and again (a 2 MB state took ~100 ms
instead of ~20 ms). The state is plain acyclic data that reference counting frees, so the
collector is paused while it is decoded, and what was allocated meanwhile goes straight to the
oldest generation when it resumes: otherwise the first allocation after it would start a full
collection over the whole new state (~70 ms of a 50-series read on a busy machine).
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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            # freeze + unfreeze: every tracked object into the oldest generation, without
            # counting it towards the next full collection (nothing is left frozen)
            gc.freeze()
            gc.unfreeze()
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
