"""LangSmithSource: runs and feedback from the LangSmith API through the real ``langsmith.Client``.

Which run-listing path (checked against the installed SDK, langsmith 0.15):

* ``Client.runs.query`` (``POST /api/v2/runs/query``, ``next_cursor`` pagination, newest first)
  is the default wherever the server offers it; ``Client.list_runs`` (``POST /runs/query``, v1,
  ``cursors.next``, at most 100 runs a page) is deprecated (removed after 2027-01-31) and the
  fallback. We choose as the SDK does (``api_version="auto"``): its own
  ``get_query_backend(/info instance_flags)`` decides, and only a ClickHouse-only instance
  (``sdb_query_enabled`` off or absent, the default of an instance that reports no flags)
  gets v1.
* One retry policy: this source's. v1 requests go through ``Client.request_with_retries`` with
  one attempt and urllib3 retries off; v2 requests go through ``Client.runs`` re-bound to a copy
  of the SDK's v2 client with ``max_retries=0`` (the SDK retries 408/409/429/5xx and timeouts
  twice by default, underneath ours). So every HTTP request, every wait (``Retry-After`` is
  honoured, ``rate_limited`` counts 429s) and every timeout is this source's, counted in
  ``describe()`` (``requests``, ``retries``, ``rate_limited``, ``waited_s``). A request's
  timeout never reaches past the step's deadline, and no retry waits past it, so a step ends
  within its budget plus at most one request timeout.
* v1 pages are read with exactly the body ``list_runs`` sends (plus ``order: "asc"``) rather than
  through ``list_runs`` itself, which turns every record into a ``schemas.Run`` inside its
  generator: one malformed record would end the iteration and lose the page cursor.

Exactly once, late runs included. Each (project, scope) reads runs by *start* time up to
``hi = now - settle_s``, and every poll re-reads an overlap of ``overlap_s`` behind its cursor
``lo``: ``[max(lo - overlap_s, floor), hi)``. The runs already handled there are recognised by a
bounded set of ids (``m``: a 40-bit digest and start second per run, packed as hex, kept with
the cursor in the agent's data), so a run that became visible late is counted on the next poll
and a run read twice is skipped. Hence: **a run is counted if it becomes visible at most
``settle_s + overlap_s`` after its start time**. The set holds at most ``max_seen`` runs over all
scopes; when a burst fills it, its oldest entries are dropped and ``floor`` moves past them (the
overlap shrinks for that stretch; ``describe()["overlap_s"]`` reports the shortest overlap now
in force), never counting a run twice. v1 pages are ascending, so a step may stop between
pages; v2 pages are newest first, so a v2 window (``v2_window_s``, halved when it does not fit
the step or the set) counts only once it has been read completely. A run still in progress is
remembered by id (``o``) and re-read by id until it ends, then mirrored once. The cursor is
stored with the metrics it accounts for (see ``base.Chunk``).

Feedback (``feedback=True``): ``GET /feedback`` per project by ``created_at`` with the same
overlap cursor (scope ``#feedback``); each score becomes an observation of the series of the run
it scores (``.../feedback_<key>``: count, mean and distribution from the sketch), the runs looked
up by id through the same query path.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import langsmith
import orjson
import requests
from langsmith import schemas as ls_schemas
from langsmith import utils as ls_utils
from langsmith._internal._v2_migration_utils import QueryBackend, get_query_backend
from pydantic import SecretStr
from urllib3.util import Retry

from nodes.langsmith_bridge.base import Chunk, Limits, RunSource, SourceUnavailable
from nodes.langsmith_bridge.records import (
    FeedbackScore,
    Malformed,
    TraceRun,
    iso,
    parse_feedback,
    parse_run,
)
from nodes.langsmith_bridge.seen import Seen
from state.traces import QuarantinedRecord

# the methods langsmith.Client.request_with_retries takes
HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]

# The fields list_runs selects by default, minus inputs, outputs, events and attachments: the
# bridge mirrors timings, status, errors, tokens and costs, so payloads stay small and private.
SELECT_V1 = ["id", "name", "run_type", "start_time", "end_time", "status", "error",
             "parent_run_id", "trace_id", "session_id", "app_path", "prompt_tokens",
             "completion_tokens", "total_tokens", "prompt_cost", "completion_cost", "total_cost",
             "first_token_time"]
SELECT_V2 = ["ID", "NAME", "RUN_TYPE", "STATUS", "START_TIME", "END_TIME", "ERROR",
             "PARENT_RUN_IDS", "TRACE_ID", "PROJECT_ID", "APP_PATH", "PROMPT_TOKENS",
             "COMPLETION_TOKENS", "TOTAL_TOKENS", "TOTAL_COST", "FIRST_TOKEN_TIME"]
V1_MAX_PAGE = 100  # the service refuses larger pages
MIN_V2_WINDOW_US = 1_000_000
CURSOR_BYTES = 12_000  # the agent's data is capped at state.models.MAX_PAYLOAD_BYTES
TRANSIENT = frozenset({408, 425, 429})
_CLIENTS: dict[tuple[str | None, str, float, int], langsmith.Client] = {}
MAX_CLIENTS = 8


def client_for(api_url: str | None, api_key: SecretStr, timeout_s: float,
               loop_key: int = 0) -> langsmith.Client:
    """One ``langsmith.Client`` per endpoint, key and event loop (connections are reused; the
    v2 API's async HTTP client belongs to the loop it was first used on).

    The key is only ever handed to the client: the cache is keyed by a digest of it, and nothing
    the bridge stores or logs contains it. urllib3-level retries are off (``total=0``): this
    source retries itself, within the step's budget.
    """
    secret = api_key.get_secret_value()
    digest = hashlib.blake2b(secret.encode(), digest_size=8).hexdigest()
    cache_key = (api_url, digest, timeout_s, loop_key)
    client = _CLIENTS.get(cache_key)
    if client is None:
        while len(_CLIENTS) >= MAX_CLIENTS:
            _CLIENTS.pop(next(iter(_CLIENTS))).session.close()
        ms = max(1, int(timeout_s * 1000))
        client = langsmith.Client(
            api_url=api_url, api_key=secret, timeout_ms=(ms, ms), auto_batch_tracing=False,
            retry_config=Retry(total=0, read=False, raise_on_status=False,
                               raise_on_redirect=False))
        _CLIENTS[cache_key] = client
    return client


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None if absent or invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def query_backend(info: dict[str, Any]) -> str:
    """``"v1"`` on a ClickHouse-only instance, else ``"v2"``: the SDK's own rule
    (``get_query_backend`` on ``/info``'s ``instance_flags``, as ``get_test_results`` uses it)."""
    flags = info.get("instance_flags")
    backend = get_query_backend(flags if isinstance(flags, dict) else {})
    return "v1" if backend == QueryBackend.CLICKHOUSE_ONLY else "v2"


def v2_runs(client: langsmith.Client) -> Any:
    """``client.runs`` (which checks the server's version), bound to a copy of the SDK's v2
    client with its own retries off: this source is the only one that retries."""
    runs = client.runs
    return runs._client.with_options(max_retries=0).runs


class LangSmithSource(RunSource):
    kind = "langsmith"

    def __init__(
        self, *, api_key: SecretStr, projects: list[str], api_url: str | None = None,
        web_url: str | None = None, page_size: int = 100,
        child_run_types: list[str] | None = None, backfill_s: float = 3600.0,
        settle_s: float = 30.0, overlap_s: float = 600.0, max_seen: int = 500,
        max_open: int = 100, max_open_age_s: float = 6 * 3600.0,
        timeout_s: float = 20.0, max_attempts: int = 4, backoff_base_s: float = 0.5,
        max_retry_wait_s: float = 30.0, api_version: str = "auto", v2_window_s: float = 900.0,
        feedback: bool = True, feedback_run_age_s: float = 7 * 86_400.0, loop_key: int = 0,
    ) -> None:
        if not projects:
            raise ValueError("no LangSmith projects configured (BGA_LANGSMITH_PROJECTS)")
        self.client = client_for(api_url, api_key, timeout_s, loop_key)
        self.api_url = self.client.api_url
        self.key = f"langsmith:{self.api_url}"
        self.host_url = ls_utils.get_host_url(web_url, self.api_url)
        self.projects = list(dict.fromkeys(projects))
        self.page_size = max(1, min(int(page_size), V1_MAX_PAGE))
        self.child_run_types = sorted(set(child_run_types or []))
        self.scopes = ["root", "child"] if self.child_run_types else ["root"]
        self.backfill_s = backfill_s
        self.settle_s = settle_s
        self.overlap_us = int(overlap_s * 1e6)
        self.max_seen = max(1, max_seen)
        self.feedback = feedback
        self.feedback_run_age_us = int(feedback_run_age_s * 1e6)
        self.max_open = max_open
        self.max_open_age_s = max_open_age_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.max_retry_wait_s = max_retry_wait_s
        self.api_version = api_version
        self.v2_window_us = int(v2_window_s * 1e6)
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0
        self.waited_s = 0.0
        self.overlap_in_force: float | None = None
        self.timeout_s = timeout_s
        self._deadline = float("inf")
        self._backend: str | None = None
        self._runs: Any = None
        self._links: dict[str, str] = {}
        self._seen: dict[str, Seen] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "api": self._backend or self.api_version,
                "projects": self.projects, "requests": self.requests, "retries": self.retries,
                "rate_limited": self.rate_limited, "waited_s": round(self.waited_s, 3),
                "overlap_s": self.overlap_in_force if self.overlap_in_force is not None
                else self.overlap_us / 1e6}

    # -- HTTP with retries ----------------------------------------------------------------
    def _timeout(self) -> float:
        """Per request: the configured timeout, but never past the step's deadline."""
        return max(0.05, min(self.timeout_s, self._deadline - time.monotonic()))

    def _send(self, method: HttpMethod, path: str, body: dict | None, params: dict | None,
              timeout: float):
        kwargs: dict[str, Any] = {"timeout": (timeout, timeout)}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
        if params is not None:
            kwargs["params"] = params
        # to_ignore: hand back the response of any HTTP error so that the status and the
        # Retry-After header can be read; connection failures still raise (no response).
        return self.client.request_with_retries(
            method, path, request_kwargs=kwargs, stop_after_attempt=1,
            to_ignore=(ls_utils.LangSmithError,))

    async def _attempt_v1(self, method: HttpMethod, path: str, body: dict | None,
                          params: dict | None) -> tuple[Any, int | str, float | None]:
        self.requests += 1
        try:
            resp = await asyncio.to_thread(self._send, method, path, body, params,
                                           self._timeout())
        except requests.exceptions.Timeout:
            return None, "timeout", None
        except (ls_utils.LangSmithError, requests.exceptions.RequestException):
            return None, "connection error", None
        if resp.status_code < 300:
            try:
                return resp.json(), resp.status_code, None
            except ValueError:
                return None, "invalid JSON", None
        return None, resp.status_code, parse_retry_after(resp.headers.get("Retry-After"))

    async def _attempt_v2(self, kwargs: dict[str, Any]) -> tuple[Any, int | str, float | None]:
        try:
            if self._runs is None:  # the property fetches /info the first time: not on the loop
                self._runs = await asyncio.to_thread(v2_runs, self.client)
            self.requests += 1
            raw = await self._runs.with_raw_response.query(**kwargs, timeout=self._timeout())
            return raw.http_response.json(), raw.http_response.status_code, None
        except langsmith.APITimeoutError:
            return None, "timeout", None
        except langsmith.APIConnectionError:
            return None, "connection error", None
        except langsmith.APIStatusError as exc:
            return None, exc.status_code, parse_retry_after(exc.response.headers.get("Retry-After"))
        except ValueError:
            return None, "invalid JSON", None

    async def _call(self, what: str, attempt_fn, *args: Any) -> Any:
        attempt = 0
        while True:
            attempt += 1
            data, status, retry_after = await attempt_fn(*args)
            if data is not None:
                return data
            if status == "invalid JSON":
                raise SourceUnavailable(f"{what}: the reply is not JSON")
            transient = isinstance(status, str) or status in TRANSIENT or status >= 500
            if not transient:
                raise SourceUnavailable(f"{what}: HTTP {status}",
                                        fatal=status in (401, 403, 404))
            if status == 429:
                self.rate_limited += 1
            backoff = self.backoff_base_s * 2 ** (attempt - 1) * (1 + random.random() / 4)
            wait = retry_after if retry_after is not None else backoff
            label = f"HTTP {status}" if isinstance(status, int) else status
            if attempt >= self.max_attempts or wait > self.max_retry_wait_s \
                    or time.monotonic() + wait > self._deadline:
                raise SourceUnavailable(f"{what}: {label} after {attempt} attempt(s)",
                                        retry_after=max(wait, backoff))
            self.retries += 1
            self.waited_s += wait
            await asyncio.sleep(wait)  # never busy-loops: every retry waits first

    async def _v1(self, method: HttpMethod, path: str, *, body: dict | None = None,
                  params: dict | None = None) -> Any:
        return await self._call(f"{method} {path}", self._attempt_v1, method, path, body, params)

    async def _v2(self, kwargs: dict[str, Any]) -> Any:
        return await self._call("POST /api/v2/runs/query", self._attempt_v2, kwargs)

    # -- projects -------------------------------------------------------------------------
    async def _query_backend(self) -> str:
        """The query path, from ``/info`` fetched once per client through this source's own
        retries; the client is handed the same answer, so the SDK never fetches it itself."""
        if self._backend is None:
            info = self.client._info
            if info is None:
                raw = await self._v1("GET", "/info")
                try:
                    info = ls_schemas.LangSmithInfo(**(raw if isinstance(raw, dict) else {}))
                except (TypeError, ValueError):
                    info = ls_schemas.LangSmithInfo()
                self.client._info = info
            self._backend = self.api_version if self.api_version in ("v1", "v2") else \
                query_backend({"instance_flags": info.instance_flags or {}})
        return self._backend

    async def _project(self, name: str) -> tuple[ls_schemas.TracerSessionResult | None, str]:
        """What ``read_project(project_name=..., include_stats=True)`` sends and parses."""
        found = await self._v1("GET", "/sessions",
                               params={"name": name, "limit": 1, "include_stats": True})
        if isinstance(found, dict):
            found = [found]
        if not isinstance(found, list) or not found:
            return None, f"project {name!r} not found"
        try:
            return ls_schemas.TracerSessionResult(**found[0]), ""
        except (TypeError, ValueError) as exc:
            return None, f"project {name!r}: unexpected reply ({type(exc).__name__})"

    @staticmethod
    def _gauges(name: str, project: ls_schemas.TracerSessionResult) -> list:
        out: list[tuple[str, str, float, str | None]] = []
        for field, metric, unit, scale in (
            ("run_count", "run_count", None, 1.0), ("error_rate", "error_rate", None, 1.0),
            ("total_tokens", "total_tokens", None, 1.0), ("total_cost", "total_cost", "USD", 1.0),
            ("latency_p50", "latency_p50_ms", "ms", 1000.0),
            ("latency_p99", "latency_p99_ms", "ms", 1000.0),
        ):
            value = getattr(project, field, None)
            if value is None:
                continue
            if hasattr(value, "total_seconds"):
                value = value.total_seconds()
            try:
                number = float(value) * scale
            except (TypeError, ValueError):
                continue
            if number == number and abs(number) < 1e15:
                out.append((name, metric, number, unit))
        return out

    # -- polling --------------------------------------------------------------------------
    async def poll(self, cursor: dict[str, Any] | None, limits: Limits) -> AsyncIterator[Chunk]:
        self._deadline = limits.deadline
        cur: dict[str, Any] = {"p": {}, "s": {}, "rr": 0, **(cursor or {})}
        cur["s"] = {k: {**v, "o": dict(v.get("o") or {})} for k, v in (cur.get("s") or {}).items()}
        self._seen = {}
        backend = await self._query_backend()
        rr = int(cur.get("rr", 0)) % len(self.projects)
        cur["rr"] = rr + 1
        order = self.projects[rr:] + self.projects[:rr]  # fair when a step runs out of budget
        state = _PollState(read=0)
        scan = self._scan_v2 if backend == "v2" else self._scan_v1
        for name in order:
            project, problem = await self._project(name)
            if project is None:
                yield Chunk(cursor=cur, errors=[("LangSmithProjectNotFound", problem)])
                continue
            cur["p"][name] = {"id": str(project.id), "tenant": str(project.tenant_id)}
            self._links[name] = f"{self.host_url}/o/{project.tenant_id}/projects/p/{project.id}"
            yield Chunk(cursor=cur, gauges=self._gauges(name, project))
            scans = [scan(name, str(project.id), scope, cur, limits, state)
                     for scope in self.scopes]
            if self.feedback:
                scans.append(self._scan_feedback(name, str(project.id), cur, limits, state))
            for chunks in scans:
                async for chunk in chunks:
                    yield chunk
                if state.stopped:
                    yield Chunk(cursor=self._commit(cur), more=True)
                    return

    # -- the cursor: lo, the overlap behind it and the runs already handled there ---------
    def _scope_state(self, cur: dict[str, Any], key: str, now: float) -> dict[str, Any]:
        st = cur["s"].get(key)
        if st is None:  # first poll: read back ``backfill_s``, nothing before
            lo = int((now - self.backfill_s) * 1e6)
            st = cur["s"][key] = {"lo": lo, "f": lo, "o": {}}
        elif "f" not in st:  # a cursor from before the overlap: no overlap behind it yet
            st["f"] = st["lo"]
            seen = Seen()
            for rid in st.pop("b", None) or []:
                seen.add(rid, st["lo"])
            seen.store(st)
        if key not in self._seen:
            self._seen[key] = Seen.load(st)
        return st

    def _rd(self, st: dict[str, Any]) -> int:
        """Where this poll reads from: the overlap behind the cursor, not below its floor."""
        return max(int(st["lo"]) - self.overlap_us, int(st.get("f", 0)))

    def _commit(self, cur: dict[str, Any]) -> dict[str, Any]:
        """Prune and bound the sets of handled records and write them into the cursor: at most
        ``max_seen`` records, and a cursor of at most ``CURSOR_BYTES`` (it lives in the agent's
        data, which the state caps)."""
        scopes = cur["s"]
        for key, seen in self._seen.items():
            seen.prune(self._rd(scopes[key]))
        total = sum(len(s) for s in self._seen.values())
        while total > self.max_seen:
            dropped = self._evict_oldest(scopes)
            if not dropped:
                break  # only runs of an unfinished stretch: kept (bounded by the window)
            total -= dropped
        for key, seen in self._seen.items():
            seen.store(scopes[key])
        while len(orjson.dumps(cur)) > CURSOR_BYTES and self._evict_oldest(scopes):
            for key, seen in self._seen.items():
                seen.store(scopes[key])
        runs = [st for key, st in scopes.items() if not key.endswith("#feedback")]
        if runs:
            self.overlap_in_force = round(min((st["lo"] - self._rd(st)) / 1e6 for st in runs), 3)
        return cur

    def _evict_oldest(self, scopes: dict[str, Any]) -> int:
        """Forget the oldest second of handled records behind any cursor and raise that
        scope's floor past it (its overlap shrinks; nothing is counted twice). Returns how
        many records were forgotten (0: none can be)."""
        victim: tuple[str, int] | None = None
        for key, seen in self._seen.items():
            sec = seen.oldest()
            if sec is not None and (sec + 1) * 1_000_000 <= scopes[key]["lo"] and \
                    (victim is None or sec < victim[1]):
                victim = (key, sec)
        if victim is None:
            return 0
        key, sec = victim
        scopes[key]["f"] = max(int(scopes[key].get("f", 0)), (sec + 1) * 1_000_000)
        return self._seen[key].drop_second(sec)

    def _open_total(self, cur: dict[str, Any]) -> int:
        return sum(len(s["o"]) for s in cur["s"].values())

    def _body(self, scope: str) -> dict[str, Any]:
        body: dict[str, Any] = {"is_root": scope == "root"}
        if scope == "child" and len(self.child_run_types) == 1:
            body["run_type"] = self.child_run_types[0]
        return body

    def _wanted(self, run: TraceRun, scope: str) -> bool:
        if scope == "root":
            return run.is_root
        return not run.is_root and run.run_type in self.child_run_types

    def _parse(self, raw: Any, name: str, now: float, chunk: Chunk) -> TraceRun | None:
        chunk.read += 1
        try:
            run = parse_run(raw, project=name, now=now, host_url=self.host_url)
        except Malformed as exc:
            self._quarantine(raw, name, exc, chunk)
            return None
        link = self._links.get(name)
        if run.url is None and link is not None:  # the run's page in the LangSmith UI
            run.url = f"{link}/r/{run.id}?trace_id={run.trace_id or run.id}"
        return run

    def _quarantine(self, raw: Any, name: str, exc: Exception, chunk: Chunk) -> None:
        rid = raw.get("id") if isinstance(raw, dict) else None
        key = rid if isinstance(rid, str) and rid else hashlib.blake2b(
            orjson.dumps(raw, default=str), digest_size=8).hexdigest()
        chunk.quarantined.append(QuarantinedRecord(
            self.key, f"{name}:{key}", str(exc),
            orjson.dumps(raw, default=str)[:2000].decode(errors="replace")))

    def _handle(self, run: TraceRun, scope: str, st: dict[str, Any], seen: Seen,
                pending: dict[str, TraceRun], chunk: Chunk, rd: int, open_room: int) -> int:
        """Decide one run read in ``[rd, hi)``: skipped if handled before, else recorded in
        ``pending`` (mirrored, opened or ignored when the caller commits). Returns the room
        left for runs in progress."""
        if run.start_us < rd or run.id in pending or run.id in st["o"] or run.id in seen:
            chunk.skipped += 1
            return open_room
        pending[run.id] = run
        if not self._wanted(run, scope):
            return open_room
        if run.finished:
            chunk.runs.append(run)
        elif open_room > 0:
            chunk.in_progress += 1
            return open_room - 1
        else:
            chunk.abandoned += 1  # more runs in progress than the source tracks
        return open_room

    def _settle(self, pending: dict[str, TraceRun], scope: str, st: dict[str, Any],
                seen: Seen, open_room: int) -> None:
        """Record the handled runs of a committed stretch (and the ones now in progress)."""
        for run in pending.values():
            seen.add(run.id, run.start_us)
            if not run.finished and self._wanted(run, scope) and open_room > 0:
                st["o"][run.id] = run.start_us
                open_room -= 1

    def _age_out(self, st: dict[str, Any], now: float, chunk: Chunk) -> None:
        for rid, start_us in list(st["o"].items()):
            if now - start_us / 1e6 > self.max_open_age_s:
                del st["o"][rid]
                chunk.abandoned += 1

    # -- v1: POST /runs/query, ascending pages ----------------------------------------------
    async def _pages_v1(self, body: dict[str, Any]) -> AsyncIterator[list]:
        params = dict(body)
        while True:
            reply = await self._v1("POST", "/runs/query", body=params)
            runs = reply.get("runs") if isinstance(reply, dict) else None
            if not runs:
                return
            yield runs
            nxt = (reply.get("cursors") or {}).get("next")
            if not nxt:
                return
            params["cursor"] = nxt

    async def _by_id(self, backend: str, pid: str, ids: list[str], min_us: int, max_us: int
                     ) -> AsyncIterator[list]:
        """Pages of the runs with these ids (v1 or v2), started in ``[min_us, max_us]``."""
        for i in range(0, len(ids), self.page_size):
            batch = ids[i:i + self.page_size]
            if backend == "v1":
                pages = self._pages_v1({"session": [pid], "id": batch, "select": SELECT_V1,
                                        "start_time": iso(min_us), "limit": self.page_size})
            else:
                pages = self._pages_v2({"project_ids": [pid], "selects": SELECT_V2,
                                        "page_size": self.page_size, "ids": batch,
                                        "min_start_time": iso(min_us),
                                        "max_start_time": iso(max_us)})
            async for page in pages:
                yield page

    async def _recheck_open(self, backend: str, name: str, pid: str, st: dict, cur: dict,
                            limits: Limits) -> AsyncIterator[Chunk]:
        """Re-read the runs in progress by id; mirror the ones that ended."""
        chunk = Chunk(cursor=cur)
        ids = list(st["o"])
        async for page in self._by_id(backend, pid, ids, min(st["o"].values()),
                                      int(limits.now * 1e6)):
            for raw in page:
                run = self._parse(raw, name, limits.now, chunk)
                if run is None:
                    if isinstance(raw, dict) and raw.get("id") in st["o"]:
                        del st["o"][raw["id"]]  # malformed now: quarantined, not tracked
                    continue
                if run.id in st["o"] and run.finished:
                    del st["o"][run.id]
                    chunk.runs.append(run)
        self._age_out(st, limits.now, chunk)
        yield chunk

    async def _scan_v1(self, name: str, pid: str, scope: str, cur: dict, limits: Limits,
                       state: _PollState) -> AsyncIterator[Chunk]:
        key = f"{name}#{scope}"
        st = self._scope_state(cur, key, limits.now)
        seen = self._seen[key]
        if st["o"]:
            async for chunk in self._recheck_open("v1", name, pid, st, cur, limits):
                state.read += chunk.read
                self._commit(cur)
                yield chunk
        hi = int((limits.now - self.settle_s) * 1e6)
        rd = self._rd(st)
        if rd >= hi:
            return
        body = {"session": [pid], **self._body(scope), "start_time": iso(rd),
                "order": "asc", "select": SELECT_V1, "limit": self.page_size}
        room = self.max_open - self._open_total(cur)
        async for page in self._pages_v1(body):
            chunk = Chunk(cursor=cur)
            pending: dict[str, TraceRun] = {}
            reached_hi = False
            for raw in page:
                run = self._parse(raw, name, limits.now, chunk)
                if run is None:
                    continue
                if run.start_us >= hi:
                    reached_hi = True
                    break
                room = self._handle(run, scope, st, seen, pending, chunk, rd, room)
                st["lo"] = max(int(st["lo"]), run.start_us)  # ascending: all before it read
            self._settle(pending, scope, st, seen, self.max_open - self._open_total(cur))
            state.read += chunk.read
            if reached_hi:
                break
            self._commit(cur)
            yield chunk
            if limits.exhausted(state.read):
                state.stopped = True
                return
        else:
            chunk = Chunk(cursor=cur)
        st["lo"] = max(int(st["lo"]), hi)  # every run that started before hi has been read
        self._commit(cur)
        yield chunk

    # -- v2: Client.runs.query, newest first: a window counts once read completely ----------
    async def _pages_v2(self, kwargs: dict[str, Any]) -> AsyncIterator[list]:
        params = dict(kwargs)
        while True:
            reply = await self._v2(params)
            items = reply.get("items") if isinstance(reply, dict) else None
            if not items:
                return
            yield items
            nxt = reply.get("next_cursor")
            if not nxt:
                return
            params["cursor"] = nxt

    async def _scan_v2(self, name: str, pid: str, scope: str, cur: dict, limits: Limits,
                       state: _PollState) -> AsyncIterator[Chunk]:
        key = f"{name}#{scope}"
        st = self._scope_state(cur, key, limits.now)
        seen = self._seen[key]
        if st["o"]:
            async for chunk in self._recheck_open("v2", name, pid, st, cur, limits):
                state.read += chunk.read
                self._commit(cur)
                yield chunk
        hi = int((limits.now - self.settle_s) * 1e6)
        extra: dict[str, Any] = {"is_root": scope == "root"}
        if scope == "child" and len(self.child_run_types) == 1:
            extra["run_type"] = self.child_run_types[0].upper()
        done_to: int | None = None  # this poll has read [rd, done_to): later windows start there
        while st["lo"] < hi:
            rd = self._rd(st) if done_to is None else max(self._rd(st), done_to)
            width = int(st.get("w") or self.v2_window_us)
            end = min(hi, int(st["lo"]) + width)
            chunk = Chunk(cursor=cur)
            pending: dict[str, TraceRun] = {}
            room = self.max_open - self._open_total(cur)
            kwargs = {"project_ids": [pid], "selects": SELECT_V2, "page_size": self.page_size,
                      **extra, "min_start_time": iso(rd), "max_start_time": iso(end)}
            complete = True
            try:
                async for page in self._pages_v2(kwargs):
                    for raw in page:
                        run = self._parse(raw, name, limits.now, chunk)
                        if run is not None and run.start_us < end:
                            room = self._handle(run, scope, st, seen, pending, chunk, rd, room)
                    if limits.exhausted(state.read + chunk.read):
                        complete = False  # the rest of the window does not fit this step
                        break
            except SourceUnavailable:
                if width > MIN_V2_WINDOW_US:  # try a smaller window next time
                    st["w"] = width // 2
                    yield Chunk(cursor=self._commit(cur))
                raise
            too_big = len(seen) + len(pending) > 2 * self.max_seen
            if (not complete or too_big) and width > MIN_V2_WINDOW_US:
                st["w"] = width // 2  # nothing of this window counted: it is read again
                state.read += chunk.read
                if not complete:
                    state.stopped = True
                    yield Chunk(cursor=self._commit(cur))
                    return
                continue
            self._settle(pending, scope, st, seen, self.max_open - self._open_total(cur))
            st["lo"] = done_to = end
            if width < self.v2_window_us and len(pending) < self.max_seen // 2:
                st["w"] = min(self.v2_window_us, width * 2)
            state.read += chunk.read
            self._commit(cur)
            yield chunk
            if limits.exhausted(state.read):
                state.stopped = st["lo"] < hi
                return

    # -- feedback: GET /feedback by created_at, with the same overlap ------------------------
    async def _scan_feedback(self, name: str, pid: str, cur: dict, limits: Limits,
                             state: _PollState) -> AsyncIterator[Chunk]:
        """Feedback created in ``[rd, hi)``, a window at a time (newest first by offset, so a
        window counts once read whole; halved when it does not fit the step)."""
        key = f"{name}#feedback"
        st = self._scope_state(cur, key, limits.now)
        seen = self._seen[key]
        hi = int((limits.now - self.settle_s) * 1e6)
        done_to: int | None = None
        while st["lo"] < hi:
            rd = self._rd(st) if done_to is None else max(self._rd(st), done_to)
            width = int(st.get("w") or self.v2_window_us)
            end = min(hi, int(st["lo"]) + width)
            chunk = Chunk(cursor=cur)
            found = await self._feedback_window(name, pid, rd, end, seen, chunk, limits, state)
            if found is None:
                st["w"] = max(MIN_V2_WINDOW_US, width // 2)  # read again, smaller, next step
                state.stopped = True
                yield Chunk(cursor=self._commit(cur))
                return
            await self._score(name, pid, found, rd, end, seen, chunk, limits)
            st["lo"] = done_to = end
            if width < self.v2_window_us:
                st["w"] = min(self.v2_window_us, width * 2)
            self._commit(cur)
            yield chunk

    async def _feedback_window(self, name: str, pid: str, rd: int, end: int, seen: Seen,
                               chunk: Chunk, limits: Limits, state: _PollState
                               ) -> dict[str, tuple[str, str, float, int]] | None:
        """The new scores of one window by feedback id, None if the step ran out first."""
        found: dict[str, tuple[str, str, float, int]] = {}
        params: dict[str, Any] = {"session": pid, "min_created_at": iso(rd),
                                  "max_created_at": iso(end), "has_score": True,
                                  "limit": V1_MAX_PAGE, "offset": 0}
        while True:
            page = await self._v1("GET", "/feedback", params=dict(params))
            if not isinstance(page, list) or not page:
                return found
            for raw in page:
                try:
                    fid, run_id, fkey, score, created = parse_feedback(raw)
                except Malformed as exc:
                    self._quarantine(raw, name, exc, chunk)
                    continue
                if not rd <= created < end or fid in found or fid in seen:
                    chunk.skipped += 1
                    continue
                found[fid] = (run_id, fkey, score, created)
            if len(page) < params["limit"]:
                return found
            params["offset"] += len(page)
            if limits.exhausted(state.read):
                return None

    async def _score(self, name: str, pid: str, found: dict[str, tuple[str, str, float, int]],
                     rd: int, end: int, seen: Seen, chunk: Chunk, limits: Limits) -> None:
        """Attach each score to its run (looked up by id) and record it as handled."""
        runs: dict[str, TraceRun] = {}
        ids = sorted({f[0] for f in found.values()})
        if ids:
            scratch = Chunk(cursor=chunk.cursor)
            async for page in self._by_id(self._backend or "v1", pid, ids,
                                          rd - self.feedback_run_age_us, end):
                for raw in page:
                    run = self._parse(raw, name, limits.now, scratch)
                    if run is not None:
                        runs[run.id] = run
            chunk.quarantined.extend(scratch.quarantined)
        for fid, (run_id, fkey, score, created) in found.items():
            seen.add(fid, created)
            run = runs.get(run_id)
            if run is None or not (run.is_root or run.run_type in self.child_run_types):
                chunk.abandoned += 1  # feedback on a run not mirrored (or not found)
                continue
            chunk.feedback.append(FeedbackScore(id=fid, key=fkey, score=score,
                                                ts=created / 1e6, run=run))


class _PollState:
    __slots__ = ("read", "stopped")

    def __init__(self, read: int) -> None:
        self.read = read
        self.stopped = False
