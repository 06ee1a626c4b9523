"""One normalized shape for runs from every source, and the checks that quarantine bad ones.

LangSmith's ``/runs/query`` (v1) and ``/api/v2/runs/query`` replies, ``list_runs``-style JSON
Lines exports and the local trace store all become ``TraceRun``. A record that cannot be
mirrored faithfully (no id or name, an unknown run type, unparseable or inconsistent times,
negative or non-finite token counts or costs) raises ``Malformed`` with the reason, so the
caller quarantines it and carries on with the rest.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any, Literal, overload

RUN_TYPES = frozenset({"chain", "llm", "tool", "retriever", "embedding", "prompt", "parser"})
FUTURE_SKEW_S = 300.0
MAX_ID = 128
MAX_NAME = 100
MAX_ERROR = 2_000
MAX_NUMBER = 1e15
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH

# First line of an error as LangChain / LangSmith record it: ``repr(exc)`` then a traceback,
# or ``Type: message``.
_REPR_RE = re.compile(r"^([A-Za-z_][\w.]*)\((.*)\)\s*$", re.S)
_COLON_RE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Timeout)"
                       r"|[A-Z][\w]*\.[\w.]+): (.*)$", re.S)


class Malformed(ValueError):
    """A record that cannot be mirrored; the message is the reason it is quarantined."""


class TraceRun:
    """A finished (or, with ``end`` None, still running) run, in seconds since the epoch."""

    __slots__ = ("completion_tokens", "cost", "end", "end_us", "error", "first_token_s", "id",
                 "name", "parent_id", "project", "prompt_tokens", "run_type", "start",
                 "start_us", "total_tokens", "trace_id", "url")

    def __init__(self, *, id: str, name: str, run_type: str, project: str, start_us: int,
                 end_us: int | None, parent_id: str | None = None, trace_id: str | None = None,
                 error: str | None = None, prompt_tokens: float | None = None,
                 completion_tokens: float | None = None, total_tokens: float | None = None,
                 cost: float | None = None, first_token_s: float | None = None,
                 url: str | None = None) -> None:
        self.id = id
        self.name = name
        self.run_type = run_type
        self.project = project
        self.start_us = start_us
        self.start = start_us / 1e6
        self.end_us = end_us
        self.end = end_us / 1e6 if end_us is not None else None
        self.parent_id = parent_id
        self.trace_id = trace_id
        self.error = error
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.total_tokens = total_tokens
        self.cost = cost
        self.first_token_s = first_token_s
        self.url = url

    @property
    def is_root(self) -> bool:
        return self.parent_id is None

    @property
    def finished(self) -> bool:
        return self.end is not None

    @property
    def latency_ms(self) -> float:
        """End minus start, exact to the microsecond."""
        return ((self.end_us or self.start_us) - self.start_us) / 1000.0

    def __repr__(self) -> str:
        return (f"TraceRun({self.project}/{self.name} {self.run_type} id={self.id} "
                f"latency_ms={self.latency_ms if self.end is not None else None})")


def to_us(value: Any, field: str) -> int:
    """ISO 8601 text (naive means UTC, as LangSmith returns it) or epoch seconds -> microseconds."""
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise Malformed(f"{field} is not an ISO 8601 time: {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        us = (dt - _EPOCH) // _MICRO
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise Malformed(f"{field} is not finite")
        us = round(value * 1e6)
    else:
        raise Malformed(f"{field} must be a time, got {type(value).__name__}")
    if us <= 0:
        raise Malformed(f"{field} is before 1970")
    return us



def iso(us: int) -> str:
    """Microseconds since the epoch -> ISO 8601 UTC text (exact, for cursors)."""
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(
        microsecond=us % 1_000_000).isoformat()


def _number(raw: dict, key: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # LangSmith serialises costs as decimal strings
        try:
            value = float(value)
        except ValueError:
            raise Malformed(f"{key} is not a number: {raw[key][:40]!r}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{key} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or value > MAX_NUMBER:
        raise Malformed(f"{key} must be a finite number between 0 and {MAX_NUMBER:g}")
    return float(value)


@overload
def _text(raw: dict, key: str, limit: int, required: Literal[True]) -> str: ...
@overload
def _text(raw: dict, key: str, limit: int, required: bool = False) -> str | None: ...


def _text(raw: dict, key: str, limit: int, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise Malformed(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise Malformed(f"{key} must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        if required:
            raise Malformed(f"{key} is empty")
        return None
    if required and len(value) > limit:
        if key == "id":
            raise Malformed(f"{key} is longer than {limit} characters")
        value = value[:limit]
    return value


def parse_run(raw: Any, *, project: str, now: float, host_url: str | None = None) -> TraceRun:
    """Normalize one run record (v1, v2, export or local-store shape); raises ``Malformed``."""
    if not isinstance(raw, dict):
        raise Malformed(f"record must be a JSON object, got {type(raw).__name__}")
    run_id = _text(raw, "id", MAX_ID, required=True)
    name = _text(raw, "name", MAX_NAME, required=True)
    run_type = raw.get("run_type")
    if not isinstance(run_type, str) or run_type.lower() not in RUN_TYPES:
        raise Malformed(f"unknown run_type {run_type!r}")
    start_us = to_us(raw.get("start_time"), "start_time")
    end_raw = raw.get("end_time")
    end_us = None
    if end_raw is not None:
        end_us = to_us(end_raw, "end_time")
        if end_us < start_us:
            raise Malformed("end_time is before start_time")
        if end_us / 1e6 > now + FUTURE_SKEW_S:
            raise Malformed("end_time is in the future")
    parent = raw.get("parent_run_id")
    if parent is None:
        parents = raw.get("parent_run_ids")
        if isinstance(parents, list) and parents:
            parent = parents[-1]
    if parent is not None and not isinstance(parent, str):
        raise Malformed(f"parent_run_id must be a string, got {type(parent).__name__}")
    error = raw.get("error")
    if error is not None and not isinstance(error, str):
        raise Malformed(f"error must be a string, got {type(error).__name__}")
    status = raw.get("status")
    if not error and isinstance(status, str) and status.lower() == "error":
        error = "RunError: the run failed without an error message"
    first = raw.get("first_token_time")
    first_token_s = None
    if first is not None:
        first_us = to_us(first, "first_token_time")
        if first_us < start_us:
            raise Malformed("first_token_time is before start_time")
        first_token_s = (first_us - start_us) / 1e6
    trace_id = raw.get("trace_id")
    url = None
    app_path = raw.get("app_path")
    if host_url and isinstance(app_path, str) and app_path.startswith("/"):
        url = host_url + app_path
    session = raw.get("session_name") or raw.get("project_name")
    return TraceRun(
        id=run_id, name=name, run_type=run_type.lower(),
        project=session if isinstance(session, str) and session else project,
        start_us=start_us, end_us=end_us, parent_id=parent or None,
        trace_id=trace_id if isinstance(trace_id, str) else None,
        error=error[:MAX_ERROR] if error else None,
        prompt_tokens=_number(raw, "prompt_tokens"),
        completion_tokens=_number(raw, "completion_tokens"),
        total_tokens=_number(raw, "total_tokens"), cost=_number(raw, "total_cost"),
        first_token_s=first_token_s, url=url)


class FeedbackScore:
    """One numeric feedback score on a run (the run as far as its series needs it)."""

    __slots__ = ("id", "key", "run", "score", "ts")

    def __init__(self, *, id: str, key: str, score: float, ts: float, run: TraceRun) -> None:
        self.id = id
        self.key = key
        self.score = score
        self.ts = ts
        self.run = run


MAX_FEEDBACK_KEY = 40
_KEY_RE = re.compile(r"[^A-Za-z0-9_.-]+")


def parse_feedback(raw: Any) -> tuple[str, str, str, float, int]:
    """(id, run id, key, score, created_at in µs) of a ``/feedback`` record; ``Malformed`` if it
    has no numeric score or cannot be attributed to a run."""
    if not isinstance(raw, dict):
        raise Malformed(f"feedback must be a JSON object, got {type(raw).__name__}")
    fid = _text(raw, "id", MAX_ID, required=True)
    run_id = _text(raw, "run_id", MAX_ID, required=True)
    key = _text(raw, "key", 200, required=True)
    score = raw.get("score")
    if isinstance(score, bool):
        score = float(score)
    if not isinstance(score, int | float) or not math.isfinite(score) \
            or abs(score) > MAX_NUMBER:
        raise Malformed(f"feedback score must be a finite number, got {score!r}"[:120])
    created = to_us(raw.get("created_at"), "created_at")
    clean_key = _KEY_RE.sub("_", key or "").strip("_")[:MAX_FEEDBACK_KEY] or "unnamed"
    return fid or "", run_id or "", clean_key, float(score), created


def split_error(error: str) -> tuple[str, str]:
    """``"ValueError('bad 42')Traceback ..."`` -> ``("ValueError", "bad 42")``."""
    text = error.strip()
    cut = text.find("Traceback (most recent call last)")  # LangChain appends it to repr(exc)
    if cut > 0:
        text = text[:cut]
    first = text.strip().split("\n", 1)[0].strip() or "run failed"
    match = _REPR_RE.match(first)
    if match:
        error_type, message = match.group(1), match.group(2).strip()
        if len(message) >= 2 and message[0] == message[-1] and message[0] in "'\"":
            message = message[1:-1]
        return error_type.rsplit(".", 1)[-1], message or error_type
    match = _COLON_RE.match(first)
    if match:
        return match.group(1).rsplit(".", 1)[-1], match.group(2).strip() or match.group(1)
    return "RunError", first
