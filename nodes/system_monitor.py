"""Built-in agent that watches the process and database the system runs on."""

from __future__ import annotations

import os
import resource

from nodes.base import Agent, AgentContext
from state.backends.url import parse_url
from state.settings import current as current_settings


class SystemMonitor(Agent):
    """Reports memory, load and database size, so a starved or bloated host shows up."""

    kind = "system_monitor"

    async def step(self, ctx: AgentContext) -> None:
        ctx.metric("rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, unit="MB")
        ctx.metric("load_1m", os.getloadavg()[0])
        url = ctx.database_url or current_settings().database_url
        path = parse_url(url).path  # the state's file on SQLite, else None
        if path is not None:
            size = sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
            ctx.metric("db_size_mb", size / 1_048_576, unit="MB")
