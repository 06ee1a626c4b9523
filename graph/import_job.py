"""The profile-import job graph: one LangGraph thread per job, checkpointed after every batch.

    discover -> batch -+-> batch (next batch)
                       +-> report -> END   (end of file / error)
                       +-> END             (budget used: paused)
    batch:    parse -> validate -> dedupe -> upsert   (a subgraph, traced node by node)

One checkpoint per batch, not one per step: the batch subgraph has no checkpointer of its own
and runs inside the ``batch`` node, so its four steps are one superstep of the job thread. On
PostgreSQL a checkpoint is a few round trips (about 25 ms); four per batch were most of the
batch's cost there.

The profiles database is the source of truth: ``upsert`` commits a batch and the job's new
position in one transaction (see ``nodes.profile_import.store``). Each invocation starts at
``discover``, which reads the position from that database and seeks there, so a job resumes
after a crash, a SIGKILL or a used-up tick budget from its last committed batch; the
checkpoints of thread ``import:<job_id>`` are a view of the job for time travel and tracing.
They go through the state backend's saver (``backend.checkpointer``), so they live in the
state database: the SQLite state file (not the profiles file), memory, or on PostgreSQL the
same schema as the profiles (``CasPostgresSaver``).
Batches stay out of the checkpointed state (they live in the run's context), so checkpoints
are small and the state never grows with the file.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from nodes.profile_import.job import BatchInfo, ImportOptions
from nodes.profile_import.models import Profile, Reason, quarantine_text, validate_row
from nodes.profile_import.readers import (
    FileFailure,
    Layout,
    RawRecord,
    Reader,
    discover,
    open_reader,
)
from nodes.profile_import.store import ProfileStore, profiles_location, report_of
from state.backends import Backend, make_backend
from state.schema import thread_uuid

CHECKPOINTS_KEPT = 10


class ImportState(TypedDict, total=False):
    """The checkpointed view of a job: small, and mirrored from the profiles database."""

    job_id: str
    file: str
    status: str
    offset: int
    line: int
    batches: int
    counts: dict[str, int]
    pending: int
    eof: bool
    error: str | None
    report: dict[str, Any] | None


@dataclass
class ImportRun:
    """One invocation's context: dependencies and the in-flight batch (never checkpointed)."""

    store: ProfileStore
    job: dict[str, Any]
    options: ImportOptions = field(default_factory=ImportOptions)
    deadline: float | None = None  # time.monotonic() after which the job pauses
    on_batch: Callable[[BatchInfo], None] | None = None
    fh: BinaryIO | None = None
    reader: Reader | None = None
    layout: Layout | None = None
    offset: int = 0  # committed position
    skipped: int = 0  # the reader's blank lines up to the committed position
    records: list[RawRecord] = field(default_factory=list)
    valid: list[tuple[int, Profile]] = field(default_factory=list)
    rejected: list[tuple[int, str, list[Reason]]] = field(default_factory=list)
    groups: dict[str, list[Profile]] = field(default_factory=dict)
    batch_started: float = 0.0

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


def _view(job: dict[str, Any]) -> ImportState:
    return {"job_id": job["job_id"], "file": job["path"], "status": job["status"],
            "offset": job["byte_offset"], "line": job["line_no"], "batches": job["batches"],
            "counts": {k: job[k] for k in ("rows_read", "inserted", "updated", "unchanged",
                                           "rejected")}}


# -- nodes ----------------------------------------------------------------------------------------


def discover_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Open the file, check it is the one the job started on, learn its layout, seek."""
    run = runtime.context
    job = run.store.job(run.job["job_id"]) or run.job
    run.job = job
    path = Path(job["path"])
    try:
        run.fh = path.open("rb", buffering=1 << 20)
        size = path.stat().st_size
        if job["layout"] is not None and size != job["size"]:
            raise FileFailure("file_changed",
                              f"{path.name} changed since the import started ({job['size']:,} "
                              f"-> {size:,} bytes); import the new version as a new job")
        if job["layout"] is None:
            layout = discover(run.fh, path, run.options.limits)
            run.store.set_layout(job["job_id"], asdict(layout), layout.data_offset,
                                 layout.data_line, layout.warnings)
            job = run.job = run.store.job(job["job_id"]) or job
        run.layout = Layout(**job["layout"])
        run.offset = job["byte_offset"]
        run.reader = open_reader(run.fh, run.layout, job["byte_offset"], job["line_no"],
                                 run.options.limits)
    except FileNotFoundError:
        done = f" after {job['rows_read']:,} rows" if job["rows_read"] else ""
        return {**_view(job), "error": f"{path.name} disappeared{done}: the file no longer "
                                       f"exists at {path}", "eof": False}
    except FileFailure as exc:
        return {**_view(job), "error": str(exc), "eof": False}
    except OSError as exc:
        return {**_view(job), "error": f"cannot read {path.name}: {exc}", "eof": False}
    return {**_view(job), "error": None, "eof": False, "pending": 0}


def parse_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Read the next batch of records from the committed position."""
    run = runtime.context
    assert run.reader is not None
    run.batch_started = time.perf_counter()
    try:
        run.records = run.reader.read(run.options.batch_size)
    except FileFailure as exc:
        run.records = []
        return {"error": str(exc), "pending": 0}
    except OSError as exc:
        run.records = []
        return {"error": f"reading failed: {exc}", "pending": 0}
    # at the job's recorded size the file is done: no extra empty read (and slice) to find out
    eof = run.reader.eof or run.reader.offset >= run.job["size"]
    return {"pending": len(run.records), "eof": eof}


def validate_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Normalise each record into a Profile, or collect every reason it is rejected."""
    run = runtime.context
    region, test_domains = run.options.region, run.options.test_email_domains
    valid: list[tuple[int, Profile]] = []
    rejected: list[tuple[int, str, list[Reason]]] = []
    for rec in run.records:
        if rec.data is None:
            rejected.append((rec.line, rec.raw, rec.errors))
            continue
        profile, reasons = validate_row(rec.data, region, test_domains=test_domains)
        if profile is None:
            rejected.append((rec.line, quarantine_text(rec.data, rec.raw)[:4000],
                             [(c, f"line {rec.line}: {m}") for c, m in reasons]))
        else:
            valid.append((rec.line, profile))
    run.valid, run.rejected = valid, rejected
    return {"pending": len(run.records)}


def dedupe_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Group the batch's rows by identity, in file order, for the merge in ``upsert``."""
    run = runtime.context
    groups: dict[str, list[Profile]] = {}
    for _, profile in run.valid:
        groups.setdefault(profile.identity, []).append(profile)
    run.groups = groups
    return {"pending": len(run.records)}


def upsert_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Commit the batch and the job's new position in one transaction."""
    run = runtime.context
    assert run.reader is not None
    if not run.records and run.reader.offset == run.offset:
        return {"pending": 0}  # nothing read (trailing blank lines still move the position)
    job_id = run.job["job_id"]
    counts = run.store.commit_batch(
        job_id, expected_offset=run.offset, offset=run.reader.offset, line=run.reader.line,
        read=len(run.records), groups=run.groups, rejected=run.rejected,
        record_lines=sum(rec.lines for rec in run.records),
        blank_lines=run.reader.skipped - run.skipped)
    run.offset = run.reader.offset
    run.skipped = run.reader.skipped
    job = run.store.job(job_id) or run.job
    run.job = job
    if run.on_batch is not None:
        reasons: dict[str, int] = {}
        for _, _, why in run.rejected:
            for code in {c for c, _ in why}:
                reasons[code] = reasons.get(code, 0) + 1
        run.on_batch(BatchInfo(job_id, len(run.records), counts, len(run.rejected), reasons,
                               (time.perf_counter() - run.batch_started) * 1000,
                               run.offset, job["size"], job["rows_read"]))
    run.records, run.valid, run.rejected, run.groups = [], [], [], {}
    return {**_view(job), "pending": 0}


def report_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Finish the job (done, or failed with its error) and write its report."""
    run = runtime.context
    job_id = run.job["job_id"]
    error = state.get("error")
    if error is None and run.reader is not None and run.reader.offset != run.job["size"]:
        error = (f"{run.job['name']} changed while it was read: {run.job['size']:,} bytes at the "
                 f"start, {run.reader.offset:,} read")
    if error is None:
        if not Path(run.job["path"]).exists():
            run.store.add_warning(job_id, "the file was removed during the import (it had been "
                                          "read completely)")
        if run.job["rows_read"] == 0:
            run.store.add_warning(job_id, "the file has no data rows")
    job = run.store.finish(job_id, "failed" if error else "done", error)
    run.job = job
    quarantined = run.store.count_quarantined(job_id)
    return {**_view(job), "error": job.get("error"), "report": report_of(job, quarantined)}


def after_upsert(state: ImportState, runtime: Runtime[ImportRun]
                 ) -> Literal["batch", "report", "__end__"]:
    run = runtime.context
    if state.get("error") or state.get("eof"):
        return "report"
    if run.deadline is not None and time.monotonic() >= run.deadline:
        # paused: the next invocation resumes from the committed offset (LangGraph types END
        # as a plain str, not Literal["__end__"])
        return END  # type: ignore[return-value]
    return "batch"


def after_step(state: ImportState) -> Literal["next", "report"]:
    return "report" if state.get("error") else "next"


def build_batch_graph() -> Any:
    """One batch: parse -> validate -> dedupe -> upsert (compiled without a checkpointer)."""
    graph = StateGraph(ImportState, context_schema=ImportRun)
    graph.add_node("parse", parse_node)
    graph.add_node("validate", validate_node)
    graph.add_node("dedupe", dedupe_node)
    graph.add_node("upsert", upsert_node)
    graph.add_edge(START, "parse")
    graph.add_conditional_edges("parse", after_step, {"next": "validate", "report": END})
    graph.add_edge("validate", "dedupe")
    graph.add_edge("dedupe", "upsert")
    graph.add_edge("upsert", END)
    return graph.compile(checkpointer=False, name="batch")


_BATCH = build_batch_graph()
# The batch subgraph must be told a durability other than the job's "sync": langgraph 1.2 then
# waits for a checkpoint future that a graph without a checkpointer never makes. Telling it
# "exit" works, and warns that durability has no effect: exactly that warning is silenced.
warnings.filterwarnings("ignore", message="`durability` has no effect when no checkpointer",
                        category=UserWarning)


def batch_node(state: ImportState, runtime: Runtime[ImportRun]) -> ImportState:
    """Run one batch through the batch subgraph (one superstep, one checkpoint, of the job)."""
    out: ImportState = _BATCH.invoke(state, context=runtime.context, durability="exit")
    return out


def build_import_graph() -> StateGraph[ImportState, ImportRun, ImportState, ImportState]:
    """The job graph, uncompiled (callers choose the checkpointer)."""
    graph = StateGraph(ImportState, context_schema=ImportRun)
    graph.add_node("discover", discover_node)
    graph.add_node("batch", batch_node)
    graph.add_node("report", report_node)
    graph.add_edge(START, "discover")
    graph.add_conditional_edges("discover", after_step, {"next": "batch", "report": "report"})
    graph.add_conditional_edges("batch", after_upsert, ["batch", "report", END])
    graph.add_edge("report", END)
    return graph


# -- running --------------------------------------------------------------------------------------


def job_thread(job_id: str) -> str:
    return thread_uuid(f"import:{job_id}")


async def run_job(store: ProfileStore, backend: Backend, job: dict[str, Any],
                  options: ImportOptions | None = None, *, deadline: float | None = None,
                  on_batch: Callable[[BatchInfo], None] | None = None) -> dict[str, Any]:
    """Run (or resume) ``job`` until it ends or ``deadline`` passes; returns its report.

    The report's ``status`` is ``running`` when the job paused at the deadline.
    """
    graph = build_import_graph().compile(checkpointer=backend.checkpointer)
    run = ImportRun(store=store, job=job, options=options or ImportOptions(),
                    deadline=deadline, on_batch=on_batch)
    thread = job_thread(job["job_id"])
    config: RunnableConfig = {"configurable": {"thread_id": thread},
                              "recursion_limit": 1_000_000_000,
                              "run_name": "profile_import_job",
                              "tags": ["profile_import", f"job:{job['job_id']}"],
                              "metadata": {"job_id": job["job_id"], "file": job["name"]}}
    await asyncio.to_thread(store.begin_run, job["job_id"])
    started = time.perf_counter()
    try:
        await graph.ainvoke({"job_id": job["job_id"], "file": job["path"]}, config,
                            context=run, durability="sync")
    finally:
        run.close()
        await asyncio.to_thread(store.add_active_time, job["job_id"],
                                time.perf_counter() - started)
        await backend.prune_checkpoints(thread, CHECKPOINTS_KEPT)
    final = store.job(job["job_id"]) or job
    return report_of(final, store.count_quarantined(job["job_id"]))


async def import_file(path: str | Path, *, database_url: str, force: bool = False,
                      options: ImportOptions | None = None,
                      on_start: Callable[[dict[str, Any], str], None] | None = None,
                      on_batch: Callable[[BatchInfo], None] | None = None) -> dict[str, Any]:
    """Import one file into the profiles database of the system at ``database_url``.

    Resumes the running job of the same content if there is one; skips content imported
    before unless ``force``. Returns the job report (``action``: new, resumed or skipped).
    Raises OSError when the file cannot be read at all and JobMoved when another process is
    working the same job.
    """
    backend = make_backend(database_url)
    await backend.setup()
    store = await asyncio.to_thread(ProfileStore.open, profiles_location(database_url))
    try:
        prepared = await asyncio.to_thread(store.prepare, Path(path), force=force)
        if on_start is not None:
            on_start(prepared.job, prepared.action)
        if prepared.action == "skipped":
            report = report_of(prepared.job, 0)
        else:
            report = await run_job(store, backend, prepared.job, options, on_batch=on_batch)
        report["action"] = prepared.action
        return report
    finally:
        store.close()
        await backend.aclose()
