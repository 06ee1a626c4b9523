"""Coordinator steps that run on every tick of the system graph."""

from __future__ import annotations

import time
from typing import Any

from langgraph.types import Overwrite

from state.compact import compact
from state.folder import GROWING
from state.queries import config_of
from state.schema import SystemState


async def review(state: SystemState) -> dict[str, Any]:
    """Close the tick: re-bound every growing channel against the clock and count the tick."""
    now = time.time()
    retention = config_of(dict(state)).retention
    current = {ch: state.get(ch) or {} for ch in GROWING}
    update: dict[str, Any] = {ch: Overwrite(v) for ch, v in compact(current, now, retention).items()}
    update["stats"] = {"ticks": 1, "last_tick_at": now}
    return update
