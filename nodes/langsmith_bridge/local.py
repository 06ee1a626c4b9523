"""LocalTraceSource: the bridge's source of this system's own runs (the local trace store).

``graph.tracing.LocalTracer`` records them; this source reads the store back in insertion
order; its cursor is the last sequence number mirrored. It is the bridge's default source when
no LangSmith key is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from nodes.langsmith_bridge.base import Chunk, Limits, RunSource
from nodes.langsmith_bridge.records import Malformed, parse_run
from state.traces import QuarantinedRecord, TraceStore, open_store

READ_CHUNK = 2_000


class LocalTraceSource(RunSource):
    """Finished runs from the local trace store, oldest first; the cursor is a sequence number."""

    kind = "local"

    def __init__(self, database_url: str, *, store: TraceStore | None = None) -> None:
        self.key = "local"
        self.store = store or open_store(database_url)
        self._own = store is None

    async def poll(self, cursor: dict[str, Any] | None, limits: Limits) -> AsyncIterator[Chunk]:
        seq = int((cursor or {}).get("seq", 0))
        first = await self.store.first_seq()
        if first is not None and first > seq + 1:  # pruned before they could be mirrored
            gap = first - seq - 1
            seq = first - 1
            yield Chunk(cursor={"seq": seq}, abandoned=gap)
        read = 0
        while True:
            rows = await self.store.read_after(seq, max(1, min(READ_CHUNK,
                                                                limits.max_runs - read)))
            if not rows:
                return
            chunk = Chunk(cursor={"seq": rows[-1]["seq"]})
            for row in rows:
                chunk.read += 1
                try:
                    chunk.runs.append(parse_run(row, project=row["project"],
                                                now=limits.now))
                except Malformed as exc:
                    chunk.quarantined.append(QuarantinedRecord(
                        self.key, f"seq:{row['seq']}", str(exc), None))
            seq = rows[-1]["seq"]
            read += len(rows)
            yield chunk
            if limits.exhausted(read):
                yield Chunk(cursor={"seq": seq}, more=True)
                return

    async def aclose(self) -> None:
        if self._own:
            await self.store.aclose()
