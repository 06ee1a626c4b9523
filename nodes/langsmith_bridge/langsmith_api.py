"""LangSmithSource: runs from the LangSmith API through the real ``langsmith.Client``.

Which run-listing path (checked against the installed SDK, langsmith 0.15):

* ``Client.list_runs`` sends ``POST /runs/query`` (v1) with ``cursors.next`` pagination, at most
  100 runs per page, and is deprecated in favour of ``Client.runs.query`` (= ``query_v2``,
  ``POST /api/v2/runs/query`` with ``next_cursor``). The SDK itself picks between them from
  ``GET /info``'s ``instance_flags``: v2 wherever SmithDB serves queries
  (``sdb_query_enabled``), v1 on ClickHouse-only instances, which is also what an instance that
  does not report the flags is taken to be. We follow the same rule (``api_version="auto"``).
* v1 requests go through ``Client.request_with_retries`` with exactly the body ``list_runs``
  sends (plus ``order: "asc"``), rather than through ``list_runs`` itself, because
  ``list_runs`` turns every record into a ``schemas.Run`` inside its generator: one malformed
  record raises there and ends the iteration, losing the rest of the page and the page cursor.
  Reading the pages ourselves keeps the page cursor, quarantines a bad record on its own, and
  lets this source own the retry policy (429 ``Retry-After``, 5xx, timeouts) within the step's
  time budget instead of urllib3 sleeping for however long a server asks.
* v2 requests use ``Client.runs.query`` (its raw-response form, for the same reason).

Exactly once with a start-time cursor: each (project, scope) reads the half-open window
``[lo, now - settle_s)`` of run *start* times, oldest first (v1 ``order: "asc"``; v2 pages are
newest first, so a v2 window is mirrored only once it has been read completely). A finished run
is mirrored when its window is read; a run still in progress is remembered by id (``open``)
and re-read by id on later polls until it ends, then mirrored once. ``lo`` moves to the window's
end, or, when a step stops inside a v1 window, to the last start time read, together with the
ids read at exactly that time (``b``), so an overlapping page or poll is skipped, not counted
twice. The cursor is stored with the metrics it accounts for (see ``base.Chunk``).
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
from pydantic import SecretStr
from urllib3.util import Retry

from nodes.langsmith_bridge.base import Chunk, Limits, RunSource, SourceUnavailable
from nodes.langsmith_bridge.records import Malformed, TraceRun, iso, parse_run
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
    """``"v2"`` where SmithDB serves queries, else ``"v1"`` (the SDK's own rule, from /info)."""
    flags = info.get("instance_flags") or {}
    return "v2" if bool(flags.get("sdb_query_enabled", False)) else "v1"


class LangSmithSource(RunSource):
    kind = "langsmith"

    def __init__(
        self, *, api_key: SecretStr, projects: list[str], api_url: str | None = None,
        web_url: str | None = None, page_size: int = 100,
        child_run_types: list[str] | None = None, backfill_s: float = 3600.0,
        settle_s: float = 30.0, max_open: int = 150, max_open_age_s: float = 6 * 3600.0,
        timeout_s: float = 20.0, max_attempts: int = 4, backoff_base_s: float = 0.5,
        max_retry_wait_s: float = 30.0, api_version: str = "auto", v2_window_s: float = 900.0,
        loop_key: int = 0,
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
        self.max_open = max_open
        self.max_open_age_s = max_open_age_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_base_s = backoff_base_s
        self.max_retry_wait_s = max_retry_wait_s
        self.api_version = api_version
        self.v2_window_us = int(v2_window_s * 1e6)
        self.retries = 0
        self.rate_limited = 0
        self.timeout_s = timeout_s
        self._deadline = float("inf")
        self._backend: str | None = None
        self._runs: Any = None
        self._links: dict[str, str] = {}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "api": self._backend or self.api_version,
                "projects": self.projects, "retries": self.retries,
                "rate_limited": self.rate_limited}

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
                self._runs = await asyncio.to_thread(lambda: self.client.runs)
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
            await asyncio.sleep(wait)  # never busy-loops: every retry waits first

    async def _v1(self, method: HttpMethod, path: str, *, body: dict | None = None,
                  params: dict | None = None) -> Any:
        return await self._call(f"{method} {path}", self._attempt_v1, method, path, body, params)

    async def _v2(self, kwargs: dict[str, Any]) -> Any:
        return await self._call("POST /api/v2/runs/query", self._attempt_v2, kwargs)

    # -- projects -------------------------------------------------------------------------
    async def _query_backend(self) -> str:
        if self._backend is None:
            if self.api_version in ("v1", "v2"):
                self._backend = self.api_version
            else:
                info = await self._v1("GET", "/info")
                self._backend = query_backend(info if isinstance(info, dict) else {})
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
        cur["s"] = {k: {"lo": v["lo"], "b": list(v.get("b") or []), "o": dict(v.get("o") or {})}
                    for k, v in (cur.get("s") or {}).items()}
        backend = await self._query_backend()
        rr = int(cur.get("rr", 0)) % len(self.projects)
        cur["rr"] = rr + 1
        order = self.projects[rr:] + self.projects[:rr]  # fair when a step runs out of budget
        state = _PollState(read=0)
        for name in order:
            project, problem = await self._project(name)
            if project is None:
                yield Chunk(cursor=cur, errors=[("LangSmithProjectNotFound", problem)])
                continue
            cur["p"][name] = {"id": str(project.id), "tenant": str(project.tenant_id)}
            self._links[name] = f"{self.host_url}/o/{project.tenant_id}/projects/p/{project.id}"
            yield Chunk(cursor=cur, gauges=self._gauges(name, project))
            for scope in self.scopes:
                scan = self._scan_v2 if backend == "v2" else self._scan_v1
                async for chunk in scan(name, str(project.id), scope, cur, limits, state):
                    yield chunk
                if state.stopped:
                    yield Chunk(cursor=cur, more=True)
                    return

    def _open_total(self, cur: dict[str, Any]) -> int:
        return sum(len(s["o"]) for s in cur["s"].values())

    def _scope_state(self, cur: dict[str, Any], key: str, now: float) -> dict[str, Any]:
        st = cur["s"].get(key)
        if st is None:
            st = cur["s"][key] = {"lo": int((now - self.backfill_s) * 1e6), "b": [], "o": {}}
        return st

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
            rid = raw.get("id") if isinstance(raw, dict) else None
            key = rid if isinstance(rid, str) and rid else hashlib.blake2b(
                orjson.dumps(raw, default=str), digest_size=8).hexdigest()
            chunk.quarantined.append(QuarantinedRecord(
                self.key, f"{name}:{key}", str(exc),
                orjson.dumps(raw, default=str)[:2000].decode(errors="replace")))
            return None
        link = self._links.get(name)
        if run.url is None and link is not None:  # the run's page in the LangSmith UI
            run.url = f"{link}/r/{run.id}?trace_id={run.trace_id or run.id}"
        return run

    def _age_out(self, st: dict[str, Any], now: float, chunk: Chunk) -> None:
        for rid, start_us in list(st["o"].items()):
            if now - start_us / 1e6 > self.max_open_age_s:
                del st["o"][rid]
                chunk.abandoned += 1

    async def _recheck_open_v1(self, name: str, pid: str, st: dict, cur: dict, limits: Limits,
                               seen: set[str]) -> AsyncIterator[Chunk]:
        ids = list(st["o"])
        for i in range(0, len(ids), self.page_size):
            batch = ids[i:i + self.page_size]
            body = {"session": [pid], "id": batch, "select": SELECT_V1,
                    "start_time": iso(min(st["o"][r] for r in batch)), "limit": self.page_size}
            chunk = Chunk(cursor=cur)
            async for page in self._pages_v1(body):
                for raw in page:
                    run = self._parse(raw, name, limits.now, chunk)
                    if run is None or run.id not in st["o"]:
                        if isinstance(raw, dict) and raw.get("id") in st["o"]:
                            del st["o"][raw["id"]]  # malformed now: quarantined, not tracked
                        continue
                    if run.finished and run.id not in seen:
                        del st["o"][run.id]
                        seen.add(run.id)
                        chunk.runs.append(run)
            self._age_out(st, limits.now, chunk)
            yield chunk

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

    async def _scan_v1(self, name: str, pid: str, scope: str, cur: dict, limits: Limits,
                       state: _PollState) -> AsyncIterator[Chunk]:
        key = f"{name}#{scope}"
        st = self._scope_state(cur, key, limits.now)
        seen: set[str] = set()
        if st["o"]:
            async for chunk in self._recheck_open_v1(name, pid, st, cur, limits, seen):
                state.read += chunk.read
                yield chunk
        hi = int((limits.now - self.settle_s) * 1e6)
        if st["lo"] >= hi:
            return
        body = {"session": [pid], **self._body(scope), "start_time": iso(st["lo"]),
                "order": "asc", "select": SELECT_V1, "limit": self.page_size}
        lo, b = st["lo"], list(st["b"])
        bset = set(b)
        complete = True
        async for page in self._pages_v1(body):
            chunk = Chunk(cursor=cur)
            reached_hi = False
            for raw in page:
                run = self._parse(raw, name, limits.now, chunk)
                if run is None:
                    continue
                s = run.start_us
                if s >= hi:
                    reached_hi = True
                    break
                if s < lo or (s == lo and run.id in bset) or run.id in seen \
                        or run.id in st["o"]:
                    chunk.skipped += 1
                    continue
                if not run.finished and self._open_total(cur) >= self.max_open:
                    complete = False  # cannot track more runs in progress: resume here later
                    break
                if s > lo:
                    lo, b, bset = s, [run.id], {run.id}
                else:
                    b.append(run.id)
                    bset.add(run.id)
                seen.add(run.id)
                if not self._wanted(run, scope):
                    continue
                if run.finished:
                    chunk.runs.append(run)
                else:
                    st["o"][run.id] = s
                    chunk.in_progress += 1
            st["lo"], st["b"] = lo, b
            state.read += chunk.read
            if reached_hi or not complete:
                if reached_hi:
                    st["lo"], st["b"] = hi, []
                yield chunk
                return
            yield chunk
            if limits.exhausted(state.read):
                state.stopped = True
                return
        st["lo"], st["b"] = hi, []  # every run that started before hi has been read
        yield Chunk(cursor=cur)

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
        seen: set[str] = set()
        selects = {"project_ids": [pid], "selects": SELECT_V2, "page_size": self.page_size}
        if st["o"]:
            chunk = Chunk(cursor=cur)
            ids = list(st["o"])
            for i in range(0, len(ids), self.page_size):
                batch = ids[i:i + self.page_size]
                kwargs = {**selects, "ids": batch,
                          "min_start_time": iso(min(st["o"][r] for r in batch)),
                          "max_start_time": iso(int(limits.now * 1e6))}
                async for page in self._pages_v2(kwargs):
                    for raw in page:
                        run = self._parse(raw, name, limits.now, chunk)
                        if run is not None and run.id in st["o"] and run.finished \
                                and run.id not in seen:
                            del st["o"][run.id]
                            seen.add(run.id)
                            chunk.runs.append(run)
            self._age_out(st, limits.now, chunk)
            state.read += chunk.read
            yield chunk
        hi = int((limits.now - self.settle_s) * 1e6)
        extra: dict[str, Any] = {"is_root": scope == "root"}
        if scope == "child" and len(self.child_run_types) == 1:
            extra["run_type"] = self.child_run_types[0].upper()
        while st["lo"] < hi:
            lo, end = st["lo"], min(hi, st["lo"] + self.v2_window_us)
            chunk = Chunk(cursor=cur)
            opened: dict[str, int] = {}
            kwargs = {**selects, **extra, "min_start_time": iso(lo), "max_start_time": iso(end)}
            # v2 pages are newest first: a window counts only once it has been read completely
            async for page in self._pages_v2(kwargs):
                for raw in page:
                    run = self._parse(raw, name, limits.now, chunk)
                    if run is None or run.start_us >= end:
                        continue
                    if run.start_us < lo or (run.start_us == lo and run.id in st["b"]) \
                            or run.id in seen or run.id in st["o"]:
                        chunk.skipped += 1
                        continue
                    seen.add(run.id)
                    if not self._wanted(run, scope):
                        continue
                    if run.finished:
                        chunk.runs.append(run)
                    elif self._open_total(cur) + len(opened) < 2 * self.max_open:
                        opened[run.id] = run.start_us
                        chunk.in_progress += 1
                    else:
                        chunk.abandoned += 1
            st["o"].update(opened)
            st["lo"], st["b"] = end, []
            state.read += chunk.read
            yield chunk
            if limits.exhausted(state.read):
                state.stopped = st["lo"] < hi
                return


class _PollState:
    __slots__ = ("read", "stopped")

    def __init__(self, read: int) -> None:
        self.read = read
        self.stopped = False
