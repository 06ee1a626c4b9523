"""Fold the inbox into the state exactly once, and read state plus unfolded rows consistently.

Exactly once: a fold first deletes the rows its (committed) state already covers, reads the
rest, and writes them into the state together with their per-stream watermarks in one
checkpoint. A crash before the checkpoint commits leaves the rows in the inbox; a crash after
it leaves rows the watermarks mark as folded, which the next fold deletes unread. Each stream
has a single writer committing in sequence order, so no row can commit behind a watermark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite

from state.backends.base import Backend
from state.compact import compact
from state.config import RetentionConfig
from state.context import Context
from state.fold import DeltaBuilder, fold_rows
from state.queries import config_of
from state.schema import REDUCERS, SystemState, apply_update

FOLD_NODE = "fold_inbox"
READ_CHUNK = 50_000
GROWING = ("metrics", "error_patterns", "insights", "optimizations")


@dataclass
class FoldReport:
    folded: int = 0
    quarantined: int = 0
    marks: dict[int, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.folded + self.quarantined


def bounded(state: dict[str, Any], delta: dict[str, Any], now: float) -> dict[str, Any]:
    """Partial update that merges ``delta`` and re-bounds the growing channels."""
    config_view = apply_update({"config": state.get("config")}, {"config": delta["config"]}) \
        if "config" in delta else state
    retention: RetentionConfig = config_of(config_view).retention
    merged = {ch: REDUCERS[ch](state.get(ch), delta.get(ch)) for ch in GROWING}
    update: dict[str, Any] = {ch: Overwrite(v) for ch, v in compact(merged, now, retention).items()}
    for ch, value in delta.items():
        if ch not in GROWING:
            update[ch] = value
    return update


async def collect(
    backend: Backend, state: dict[str, Any], now: float, batch: int
) -> tuple[dict[str, Any], FoldReport]:
    """Partial state update folding up to ``batch`` inbox rows (empty dict: nothing to do).

    Caller must hold the fold lock and write the update as the next checkpoint of the thread
    whose current values are ``state``.
    """
    await backend.delete_folded(state.get("inbox") or {})
    builder = DeltaBuilder()
    report = FoldReport()
    after = (0, 0)
    quarantined = []
    while report.rows < batch:
        rows = await backend.read_inbox(min(READ_CHUNK, batch - report.rows), after)
        if not rows:
            break
        result = fold_rows(rows, builder, build=False)  # built once, below
        report.folded += result.folded
        report.quarantined += len(result.quarantined)
        quarantined.extend(result.quarantined)
        for stream, seq in result.watermarks.items():
            report.marks[stream] = max(seq, report.marks.get(stream, 0))
        after = (rows[-1].stream, rows[-1].seq)
    if not report.rows:
        return {}, report
    await backend.quarantine(quarantined, now)
    update = bounded(state, builder.build(), now)
    update["inbox"] = Overwrite(dict(report.marks))
    update["stats"] = {"events_folded": report.folded, "quarantined": report.quarantined,
                       "folds": 1, "last_fold_at": now}
    return update, report


async def fold_inbox(state: SystemState, runtime: Runtime[Context]) -> dict[str, Any]:
    """The ``fold_inbox`` node: folds up to ``ticker.fold_batch`` pending inbox rows into the
    state it is given, at the run's clock."""
    st: dict[str, Any] = dict(state)
    batch = config_of(st).ticker.fold_batch
    update, _ = await collect(runtime.context.backend, st, runtime.context.clock(), batch)
    return update


def build_fold_graph(backend: Backend):
    """Smallest graph over the system state: used to write fold results with ``aupdate_state``
    from outside the system graph, attributed to the same ``fold_inbox`` node."""
    graph = StateGraph(SystemState, context_schema=Context)
    graph.add_node(FOLD_NODE, fold_inbox)
    graph.add_edge(START, FOLD_NODE)
    graph.add_edge(FOLD_NODE, END)
    return graph.compile(checkpointer=backend.checkpointer)


async def pending_delta(backend: Backend, marks: dict[int, int],
                        heads: dict[int, int] | None = None,
                        since: dict[int, int] | None = None) -> tuple[int, dict[str, Any]]:
    """Rows above the watermarks folded into one delta (for reads): how many, and the delta.

    Without ``heads``, every row of the inbox above them, paging through it. With ``heads``
    (``Backend.inbox_heads``, read before), exactly the rows up to each stream's head (rows
    committed since are left out, so the result belongs to those heads), read stream by
    stream; with ``since`` (the heads of an earlier overlay of the same checkpoint), only the
    rows above those too: the delta to lay over that overlay."""
    builder = DeltaBuilder()
    pending = 0
    if heads is None:
        after = (0, 0)
        while True:
            rows = await backend.read_inbox(READ_CHUNK, after)
            if not rows:
                return pending, builder.build()
            after = (rows[-1].stream, rows[-1].seq)
            fresh = [r for r in rows if r.seq > marks.get(r.stream, 0)]
            pending += len(fresh)
            fold_rows(fresh, builder, build=False)  # built once, when the scan ends
    since = since or {}
    for stream in sorted(heads):
        head = heads[stream]
        low = max(marks.get(stream, 0), since.get(stream, 0))
        while low < head:
            rows = await backend.read_inbox(min(READ_CHUNK, head - low), (stream, low))
            fresh = [r for r in rows if r.stream == stream and low < r.seq <= head]
            pending += len(fresh)
            fold_rows(fresh, builder, build=False)
            if len(fresh) < len(rows) or not rows:
                break  # the stream's rows end below its head (never: no gaps) or above it
            low = fresh[-1].seq
    return pending, builder.build()
