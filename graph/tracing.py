"""The local tracer: records every run of this system's own graph into the local trace store.

``LocalTracer`` is a ``BaseTracer`` (a LangChain/LangSmith-compatible callback handler):
``graph.runner.tick`` and ``graph.worker`` attach it to a step's run config, so every finished
run (the tick itself, each node, each agent step, and any LLM or tool call an agent makes
through LangChain) is buffered and written to the state database in one transaction after the
tick. It never raises into the graph: LangChain isolates callback errors, and ``flush`` logs
and drops what it cannot write. The LangSmith Bridge reads the store back
(``nodes.langsmith_bridge.local.LocalTraceSource``).
"""

from __future__ import annotations

import logging
import time
import weakref
from datetime import datetime
from typing import Any

from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from state.redact import redact, redact_obj
from state.traces import TraceStore, has_store, open_store

log = logging.getLogger(__name__)

LOCAL_PROJECT = "local"
MAX_METADATA_BYTES = 4_096
HIDDEN_TAG = "langsmith:hidden"
STRUCTURAL_PREFIXES = ("langgraph_", "ls_")
STRUCTURAL_KEYS = frozenset({"thread_id", "checkpoint_ns", "tick", "agent_id", "kind"})


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _usage(run: Run) -> tuple[float | None, float | None, float | None, float | None]:
    """Prompt, completion and total tokens and cost of an LLM run, where the model reported them.

    Providers report usage either in ``llm_output["token_usage"]`` (OpenAI style) or per
    message as ``usage_metadata`` (LangChain's standard); costs only when a provider says so.
    """
    outputs = run.outputs or {}
    llm_output = outputs.get("llm_output") or {}
    usage = llm_output.get("token_usage") or llm_output.get("usage") or {}
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    total = usage.get("total_tokens")
    if prompt is None and completion is None:
        found = False
        p = c = t = 0.0
        for group in outputs.get("generations") or []:
            for gen in group if isinstance(group, list) else [group]:
                message = gen.get("message") if isinstance(gen, dict) else None
                meta = getattr(message, "usage_metadata", None)
                if meta is None and isinstance(message, dict):
                    meta = message.get("usage_metadata") or \
                        (message.get("kwargs") or {}).get("usage_metadata")
                if isinstance(meta, dict):
                    found = True
                    p += float(meta.get("input_tokens") or 0)
                    c += float(meta.get("output_tokens") or 0)
                    t += float(meta.get("total_tokens") or 0)
        if found:
            prompt, completion, total = p, c, t
    cost = llm_output.get("total_cost")
    if total is None and prompt is not None and completion is not None:
        total = float(prompt) + float(completion)

    def num(v: Any) -> float | None:
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

    return num(prompt), num(completion), num(total), num(cost)


def _metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Run metadata with secrets redacted; LangGraph's own structural keys are kept as they are
    (they are ids and node names, and redacting them on every run is the tracer's main cost)."""
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(key, str) and (key.startswith(STRUCTURAL_PREFIXES)
                                     or key in STRUCTURAL_KEYS):
            out[key] = value
        else:
            out.update(redact_obj({key: value}))
    return out


def row_from_run(run: Run, project: str, now: float | None = None) -> dict[str, Any] | None:
    """The trace-store row of a finished LangChain run (None for runs LangSmith hides)."""
    tags = list(run.tags or [])
    if HIDDEN_TAG in tags:
        return None
    metadata = _metadata((run.extra or {}).get("metadata") or {})
    if len(repr(metadata)) > MAX_METADATA_BYTES:
        metadata = {"truncated": True}
    first_token = None
    for event in run.events or []:
        if isinstance(event, dict) and event.get("name") == "new_token":
            first_token = _ts(event.get("time")) if isinstance(event.get("time"), datetime) \
                else None
            break
    prompt, completion, total, cost = _usage(run) if run.run_type == "llm" else (None,) * 4
    start = _ts(run.start_time) or time.time()
    end = _ts(run.end_time) or max(start, now or time.time())
    return {
        "id": str(run.id), "trace_id": str(run.trace_id) if run.trace_id else None,
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
        "project": project, "name": (run.name or "unnamed")[:200], "run_type": run.run_type,
        "start_time": start, "end_time": end, "status": "error" if run.error else "success",
        "error": redact(run.error[:4000]) if run.error else None, "tags": tags,
        "metadata": metadata, "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": total, "total_cost": cost, "first_token_time": first_token,
        "recorded_at": now or time.time(),
    }


class LocalTracer(BaseTracer):
    """Records each finished run of this system's own graph into the local trace store.

    Its callbacks only buffer rows (``flush`` writes them), so it is a synchronous tracer run
    in line, as LangChain's own LangSmith tracer is: an async one costs a task per callback
    event and two more per run start and end (``AsyncBaseTracer`` gathers its hooks)."""

    name = "bga_local_tracer"
    run_inline = True

    def __init__(self, database_url: str, *, project: str = LOCAL_PROJECT,
                 store: TraceStore | None = None) -> None:
        super().__init__()
        self.database_url = database_url
        self.project = project
        self._store = store
        self._buffer: list[dict[str, Any]] = []
        self.recorded = 0

    def _persist_run(self, run: Run) -> None:
        return None  # every run is recorded as it ends (``_on_run_update``)

    def _on_run_update(self, run: Run) -> None:
        try:
            row = row_from_run(run, self.project)
        except Exception:  # a tracer must never break the traced run
            log.exception("could not record run %s", getattr(run, "id", "?"))
            return
        if row is not None:
            self._buffer.append(row)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> int:
        """Write the buffered runs in one transaction; failures are logged, never raised."""
        rows, self._buffer = self._buffer, []
        if not rows:
            return 0
        store = self._store or open_store(self.database_url)
        try:
            written = await store.append(rows)
            await store.prune()
        except Exception as exc:
            log.warning("local trace store: dropped %d runs (%s)", len(rows), exc)
            return 0
        finally:
            if self._store is None:
                await store.aclose()
        self.recorded += written
        return written


_STORES: weakref.WeakKeyDictionary[Any, TraceStore] = weakref.WeakKeyDictionary()


def local_tracer(backend: Any, project: str = LOCAL_PROJECT) -> LocalTracer | None:
    """A tracer for one tick of the system graph on ``backend``, if its database has a local
    trace store. The store (one database connection) lives as long as the backend object."""
    url = backend.url
    if not has_store(url):
        return None
    store = _STORES.get(backend)
    if store is None:
        store = _STORES[backend] = open_store(url)
    return LocalTracer(url, project=project, store=store)
