"""A local HTTP server that speaks the parts of the LangSmith REST API the real client uses.

Confirmed against the installed SDK (langsmith 0.15): ``Client.list_runs`` / ``read_project``
send ``GET /info``, ``GET /sessions?name=...&limit=1&include_stats=...`` and
``POST /runs/query`` (body: ``session``, ``is_root``, ``run_type``, ``start_time``, ``id``,
``select``, ``limit``, ``order``; reply ``{"runs": [...], "cursors": {"next": ...}}``, the body
re-sent with ``"cursor"`` until ``next`` is null); ``Client.runs.query`` sends
``POST /api/v2/runs/query`` (``project_ids``, ``min_start_time``, ``max_start_time``,
``page_size``, ``selects``, ``ids``, ``cursor``; reply ``{"items": [...], "next_cursor": ...}``,
newest first); ``Client.list_feedback`` sends ``GET /feedback`` (``run``, ``session``, ``key``,
``has_score``, ``min_created_at``, ``max_created_at``, ``limit``, ``offset``; a JSON list).
Every request must carry the ``x-api-key`` header.

Kinder than the real service in nothing the bridge relies on:

* cursors are server-side: a cursor names the last row served, and the next page is cut from
  the live result after it, so pages shift while runs arrive (a run that becomes visible behind
  the cursor is not served in that pass);
* ingestion lag: a run or feedback is visible only ``lag_s`` after it was stored (by the fake's
  ``clock``), or only once ``reveal``-ed when stored with ``hidden=True``;
* 422 for an invalid request field: an unknown body field, a ``select``/``selects`` entry or a
  ``run_type`` outside the SDK's enums, an ``order`` other than asc/desc, a page over 100;
* ``/info`` reports a current version (0.18), so the SDK's ``runs`` resource does not warn;
* faults are scripted per path, v1 and v2 alike: a status (429 with ``Retry-After``, 500, 503),
  or a delay longer than the client's timeout.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import typing
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from langsmith.types.run_select_field import RunSelectField
from langsmith.types.run_type import RunType
from langsmith.types.run_type_enum import RunTypeEnum

API_KEY = "lsv2_pt_0123456789abcdef0123456789abcdef_0123456789"
TENANT = "00000000-0000-4000-8000-00000000000a"
V1_MAX_PAGE = 100
VERSION = "0.18.3"
# The fields ``list_runs`` may select (its default select, and the extras it documents).
V1_SELECT = frozenset({
    "app_path", "completion_cost", "completion_tokens", "dotted_order", "end_time", "error",
    "events", "extra", "feedback_stats", "first_token_time", "id", "inputs", "name", "outputs",
    "parent_run_id", "parent_run_ids", "prompt_cost", "prompt_tokens", "reference_example_id",
    "run_type", "s3_urls", "session_id", "start_time", "status", "tags", "total_cost",
    "total_tokens", "trace_id", "child_run_ids"})
V1_BODY = frozenset({"session", "run_type", "reference_example", "query", "filter",
                     "trace_filter", "tree_filter", "is_root", "parent_run", "start_time",
                     "error", "id", "trace", "select", "limit", "order", "cursor"})
V2_BODY = frozenset({"ai_search", "cursor", "filter", "has_error", "ids",
                     "include_subtree_usage", "is_root", "max_feedback_modified_at",
                     "max_start_time", "min_feedback_modified_at", "min_start_time", "page_size",
                     "project_ids", "reference_dataset_id", "reference_examples", "run_type",
                     "selects", "sem_filter", "trace_filter", "trace_id", "tree_filter"})
V2_SELECT = frozenset(typing.get_args(RunSelectField))
V2_RUN_TYPES = frozenset(typing.get_args(RunType))
V1_RUN_TYPES = frozenset(typing.get_args(RunTypeEnum))


def iso(ts: float) -> str:
    """LangSmith's time format: ISO 8601 UTC without an offset, microseconds."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def parse_time(text: str) -> float:
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class Fault:
    method: str
    path: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # sleep this long, then answer normally (a timeout for the client)
    times: int = 1
    skip: int = 0  # let this many matching requests through first


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    status: int = 0


def make_run(project_id: str, *, name: str, start: float, latency_s: float | None,
             run_type: str = "chain", parent: str | None = None, trace: str | None = None,
             error: str | None = None, run_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """A run as LangSmith stores it (v1 field names); ``latency_s`` None: still running."""
    rid = run_id or str(uuid.uuid4())
    run = {
        "id": rid, "name": name, "run_type": run_type, "start_time": iso(start),
        "end_time": iso(start + latency_s) if latency_s is not None else None,
        "status": "pending" if latency_s is None else ("error" if error else "success"),
        "error": error, "parent_run_id": parent, "trace_id": trace or rid,
        "session_id": project_id, "inputs": {"question": "secret-ish input"},
        "outputs": {"answer": "output"},
        "app_path": f"/o/{TENANT}/projects/p/{project_id}/r/{rid}?trace_id={trace or rid}",
        "prompt_tokens": None, "completion_tokens": None, "total_tokens": None,
        "prompt_cost": None, "completion_cost": None, "total_cost": None,
        "first_token_time": None,
    }
    run.update(extra)
    return run


class FakeLangSmith:
    """Projects of runs and feedback, a request log and scripted faults; start() serves them."""

    def __init__(self, *, instance_flags: dict[str, Any] | None = None,
                 overlap_s: float = 0.0, lag_s: float = 0.0) -> None:
        self.instance_flags = instance_flags or {}
        self.overlap_s = overlap_s  # a sloppy server: also returns runs this much too early
        self.lag_s = lag_s  # ingestion lag: stored runs become visible this much later
        self.clock = time.time  # the fake's clock for visibility (tests may replace it)
        self.projects: dict[str, dict[str, Any]] = {}
        self.feedback: dict[str, dict[str, Any]] = {}
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self._cursors: dict[str, dict[str, Any]] = {}  # server-side: token -> last row served
        self._tokens = itertools.count(1)

    @classmethod
    def v2(cls, **kwargs: Any) -> FakeLangSmith:
        """An instance whose queries SmithDB serves (the SDK picks ``Client.runs.query``)."""
        return cls(instance_flags={"ch_query_enabled": True, "sdb_query_enabled": True},
                   **kwargs)

    # -- data -----------------------------------------------------------------------------
    def add_project(self, name: str, **stats: Any) -> str:
        pid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"project:{name}"))
        with self.lock:
            self.projects[name] = {"id": pid, "runs": {}, "stats": stats}
        return pid

    def _visible_at(self, hidden: bool, at: float | None = None) -> float:
        if at is not None:
            return at
        return float("inf") if hidden else self.clock() + self.lag_s

    def put(self, project: str, *runs: dict[str, Any], hidden: bool = False,
            visible_at: float | None = None) -> None:
        """Store runs as given (even malformed ones: they are served as they are), visible
        after the ingestion lag, or once ``reveal``-ed if ``hidden``. An update keeps the
        run's visibility."""
        with self.lock:
            store = self.projects[project]["runs"]
            for run in runs:
                stored = dict(run)
                try:
                    stored["_t"] = parse_time(run["start_time"])
                except (TypeError, ValueError, KeyError):
                    stored["_t"] = time.time() - 1_000
                old = store.get(run["id"])
                stored["_v"] = old["_v"] if old is not None and visible_at is None \
                    else self._visible_at(hidden, visible_at)
                store[run["id"]] = stored

    def run(self, project: str, *, hidden: bool = False, visible_at: float | None = None,
            **kwargs: Any) -> dict[str, Any]:
        run = make_run(self.projects[project]["id"], **kwargs)
        self.put(project, run, hidden=hidden, visible_at=visible_at)
        return run

    def reveal(self, *ids: str) -> None:
        """Hidden runs or feedback become visible now."""
        wanted = set(ids)
        with self.lock:
            for rec in itertools.chain(self.feedback.values(), *(
                    p["runs"].values() for p in self.projects.values())):
                if rec["id"] in wanted:
                    rec["_v"] = self.clock()

    def add_feedback(self, project: str, run_id: str, key: str, score: Any, *,
                     created: float | None = None, hidden: bool = False,
                     **extra: Any) -> dict[str, Any]:
        fb = {"id": str(uuid.uuid4()), "run_id": run_id, "key": key, "score": score,
              "value": None, "comment": None, "correction": None,
              "created_at": iso(created if created is not None else time.time()),
              "modified_at": iso(created if created is not None else time.time()),
              "session_id": self.projects[project]["id"], "trace_id": run_id,
              "feedback_source": {"type": "api"}, **extra}
        with self.lock:
            self.feedback[fb["id"]] = {**fb, "_t": parse_time(fb["created_at"]),
                                       "_v": self._visible_at(hidden)}
        return fb

    def fail(self, method: str, path: str, **kwargs: Any) -> None:
        with self.lock:
            self.faults.append(Fault(method, path, **kwargs))

    def requests(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path == path]

    # -- serving --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # an IP socket's address (bytes only for AF_UNIX)
        return f"http://{host}:{port}"

    def start(self) -> FakeLangSmith:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def setup(self) -> None:
                super().setup()  # headers and body go out in separate writes: no Nagle delay
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False  # do not wait for a handler that is still sleeping
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        seen = Seen(method, parsed.path, parse_qs(parsed.query), body,
                    {k.lower(): v for k, v in req.headers.items()})
        with self.lock:
            self.seen.append(seen)
            fault = next((f for f in self.faults
                          if f.method == method and f.path == parsed.path and f.times > 0), None)
            if fault is not None and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                fault.times -= 1
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        elif fault is not None:
            return self._reply(req, seen, fault.status, {"detail": "scripted fault"},
                               fault.headers)
        if seen.headers.get("x-api-key") != API_KEY:
            return self._reply(req, seen, 401, {"detail": "Invalid token"})
        route = {("GET", "/info"): self._info, ("GET", "/sessions"): self._sessions,
                 ("POST", "/runs/query"): self._query_v1,
                 ("POST", "/api/v2/runs/query"): self._query_v2,
                 ("GET", "/feedback"): self._feedback}.get((method, parsed.path))
        if route is None:
            return self._reply(req, seen, 404, {"detail": "Not Found"})
        status, payload = route(seen)
        self._reply(req, seen, status, payload)

    def _reply(self, req: BaseHTTPRequestHandler, seen: Seen, status: int, payload: Any,
               headers: dict[str, str] | None = None) -> None:
        seen.status = status
        data = json.dumps(payload).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)

    # -- routes ---------------------------------------------------------------------------
    def _info(self, seen: Seen) -> tuple[int, Any]:
        return 200, {"version": VERSION, "instance_flags": self.instance_flags,
                     "batch_ingest_config": {"size_limit": 100, "scale_up_qsize_trigger": 1000}}

    def _sessions(self, seen: Seen) -> tuple[int, Any]:
        name = (seen.query.get("name") or [""])[0]
        with self.lock:
            project = self.projects.get(name)
            if project is None:
                return 200, []
            runs = self._visible(project["runs"].values())
            stats = dict(project["stats"])
        errors = sum(1 for r in runs if r["status"] == "error")
        session = {"id": project["id"], "name": name, "tenant_id": TENANT,
                   "start_time": iso(time.time() - 86_400), "reference_dataset_id": None,
                   "run_count": len(runs), "error_rate": errors / len(runs) if runs else 0.0,
                   **stats}
        return 200, [session]

    def _visible(self, records: Any) -> list[dict[str, Any]]:
        now = self.clock()
        return [dict(r) for r in records if r["_v"] <= now]

    def _runs_of(self, session_ids: list[str]) -> list[dict[str, Any]]:
        with self.lock:
            return self._visible(r for p in self.projects.values() if p["id"] in session_ids
                                 for r in p["runs"].values())

    @staticmethod
    def _public(run: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in run.items() if not k.startswith("_")}

    def _page(self, runs: list, body: dict, size: int, desc: bool) -> tuple[list, str | None]:
        """The next page of the live result after the cursor's last row (server-side)."""
        if body.get("cursor"):
            with self.lock:
                last = self._cursors.get(body["cursor"])
            if last is None:
                raise LookupError("unknown cursor")
            key = (last["t"], last["id"])
            runs = [r for r in runs if ((r["_t"], r["id"]) < key if desc
                                        else (r["_t"], r["id"]) > key)]
        page = runs[:size]
        if len(runs) <= size:
            return page, None
        token = f"c{next(self._tokens)}"
        with self.lock:
            self._cursors[token] = {"t": page[-1]["_t"], "id": page[-1]["id"]}
        return page, token

    @staticmethod
    def _invalid(body: Any, allowed: frozenset[str]) -> str | None:
        if not isinstance(body, dict):
            return "body must be a JSON object"
        unknown = sorted(set(body) - allowed)
        return f"unknown field(s): {unknown}" if unknown else None

    def _query_v1(self, seen: Seen) -> tuple[int, Any]:
        body = seen.body
        problem = self._invalid(body, V1_BODY)
        if problem is None:
            limit = int(body.get("limit") or V1_MAX_PAGE)
            bad = sorted(set(body.get("select") or []) - V1_SELECT)
            if limit > V1_MAX_PAGE:
                problem = "limit must be <= 100"
            elif bad:
                problem = f"select: invalid field(s) {bad}"
            elif body.get("run_type") is not None and body["run_type"] not in V1_RUN_TYPES:
                problem = f"run_type: invalid value {body['run_type']!r}"
            elif body.get("order", "desc") not in ("asc", "desc"):
                problem = f"order: invalid value {body.get('order')!r}"
        if problem is not None:
            return 422, {"detail": problem}
        runs = self._match_v1(body)
        desc = body.get("order", "desc") == "desc"
        try:
            page, cursor = self._page(runs, body, limit, desc)
        except LookupError:
            return 400, {"detail": "invalid cursor"}
        select = body.get("select")
        out = [{k: v for k, v in self._public(r).items() if not select or k in select
                or k == "id"} for r in page]
        return 200, {"runs": out, "cursors": {"next": cursor, "prev": None}}

    def _match_v1(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        runs = self._runs_of(body.get("session") or [])
        if body.get("id"):
            wanted = set(body["id"])
            runs = [r for r in runs if r["id"] in wanted]
        else:
            if body.get("is_root") is not None:
                runs = [r for r in runs if (r["parent_run_id"] is None) == body["is_root"]]
            if body.get("run_type"):
                runs = [r for r in runs if r["run_type"] == body["run_type"]]
        if body.get("start_time"):
            since = parse_time(body["start_time"]) - self.overlap_s
            runs = [r for r in runs if r["_t"] >= since]
        runs.sort(key=lambda r: (r["_t"], r["id"]), reverse=body.get("order", "desc") == "desc")
        return runs

    def _query_v2(self, seen: Seen) -> tuple[int, Any]:
        body = seen.body
        problem = self._invalid(body, V2_BODY)
        if problem is None:
            bad = sorted(set(body.get("selects") or []) - V2_SELECT)
            if bad:
                problem = f"selects: invalid field(s) {bad}"
            elif body.get("run_type") is not None and body["run_type"] not in V2_RUN_TYPES:
                problem = f"run_type: invalid value {body['run_type']!r}"
            elif int(body.get("page_size") or 100) > V1_MAX_PAGE:
                problem = "page_size must be <= 100"
        if problem is not None:
            return 422, {"detail": problem}
        runs = self._runs_of(body.get("project_ids") or [])
        lo = parse_time(body["min_start_time"]) - self.overlap_s \
            if body.get("min_start_time") else time.time() - 86_400
        hi = parse_time(body["max_start_time"]) if body.get("max_start_time") else time.time()
        runs = [r for r in runs if lo <= r["_t"] <= hi]
        if body.get("ids"):
            runs = [r for r in runs if r["id"] in set(body["ids"])]
        if body.get("is_root") is not None:
            runs = [r for r in runs if (r["parent_run_id"] is None) == body["is_root"]]
        if body.get("run_type"):
            runs = [r for r in runs if r["run_type"].upper() == body["run_type"]]
        runs.sort(key=lambda r: (r["_t"], r["id"]), reverse=True)
        try:
            page, cursor = self._page(runs, body, int(body.get("page_size") or 100), True)
        except LookupError:
            return 400, {"detail": "invalid cursor"}
        items = []
        for r in page:
            items.append({
                "id": r["id"], "name": r["name"], "run_type": r["run_type"].upper(),
                "status": r["status"].upper(), "start_time": r["start_time"] + "Z",
                "end_time": r["end_time"] + "Z" if r["end_time"] else None, "error": r["error"],
                "parent_run_ids": [r["parent_run_id"]] if r["parent_run_id"] else [],
                "trace_id": r["trace_id"], "project_id": r["session_id"],
                "app_path": r["app_path"], "prompt_tokens": r["prompt_tokens"],
                "completion_tokens": r["completion_tokens"], "total_tokens": r["total_tokens"],
                "total_cost": r["total_cost"], "first_token_time": r["first_token_time"]})
        return 200, {"items": items, "next_cursor": cursor}

    def _feedback(self, seen: Seen) -> tuple[int, Any]:
        q = seen.query
        allowed = {"run", "session", "key", "has_score", "min_created_at", "max_created_at",
                   "limit", "offset", "source", "user", "has_comment", "level",
                   "include_user_names", "comparative_experiment_id"}
        if set(q) - allowed:
            return 422, {"detail": f"unknown parameter(s): {sorted(set(q) - allowed)}"}
        limit = int((q.get("limit") or ["100"])[0])
        if limit > V1_MAX_PAGE:
            return 422, {"detail": "limit must be <= 100"}
        offset = int((q.get("offset") or ["0"])[0])
        with self.lock:
            items = self._visible(self.feedback.values())
        if q.get("session"):
            items = [f for f in items if f["session_id"] in q["session"]]
        if q.get("run"):
            items = [f for f in items if f["run_id"] in q["run"]]
        if q.get("key"):
            items = [f for f in items if f["key"] in q["key"]]
        if (q.get("has_score") or [""])[0].lower() == "true":
            items = [f for f in items if f["score"] is not None]
        if q.get("min_created_at"):
            since = parse_time(q["min_created_at"][0])
            items = [f for f in items if f["_t"] >= since]
        if q.get("max_created_at"):
            until = parse_time(q["max_created_at"][0])
            items = [f for f in items if f["_t"] <= until]
        items.sort(key=lambda f: (f["_t"], f["id"]), reverse=True)  # newest first, by offset
        return 200, [self._public(f) for f in items[offset:offset + limit]]
