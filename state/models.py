"""Validated input records of the SharedState API (the seed's names).

Validation happens here, before anything is written, so a bad value raises
``InvalidInput`` naming the field and nothing reaches the inbox.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal, Self

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from state.redact import redact, redact_obj

MAX_NAME = 200
MAX_TEXT = 4_000
MAX_PAYLOAD_BYTES = 16_384
FUTURE_SKEW_S = 300.0
MAX_AGE_DAYS = 3650  # the longest retention (day buckets): an older timestamp is never counted
MAX_METRIC = 1e18
_CONTROL = re.compile(r"[\x00-\x1f]")

Priority = Literal["info", "low", "medium", "high", "critical"]
PRIORITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
"""Insight priorities, lowest first. ``info`` is informational (an import completed): recorded
and listed, never counted as something to act on (``ACTIONABLE``)."""
ACTIONABLE: tuple[str, ...] = ("low", "medium", "high", "critical")


class InvalidInput(ValueError):
    """Bad input to the SharedState API; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        field = redact(field)  # an error never repeats a secret (each part on its own: the
        super().__init__(f"{field}: {redact(message)}")  # message is no value of the field)
        self.field = field


def _utf8(field: str, value: str) -> None:
    """Refuse what no database or JSON document can store (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "is not valid Unicode (lone surrogate)") from None


def check_utf8_tree(field: str, value: object) -> None:
    """``_utf8`` for every string key and value in nested dicts, lists and tuples (a restored
    document's channels); the field names the path to the first bad one."""
    stack: list[tuple[str, object]] = [(field, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            _utf8(where, item)
        elif isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str):
                    _utf8(f"{where} key", k)
                    stack.append((f"{where}.{k}", v))
                else:
                    stack.append((f"{where}.{k!r}", v))
        elif isinstance(item, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))


_NAMES: dict[tuple[str, str, bool], str] = {}
_NAMES_MAX = 8_192
"""Names already checked (agents, series, units repeat on every write): ``check_name`` of a
known good name is one dict lookup. Only names redaction left alone are kept, so no secret
is held here; bad names are never kept (they raise every time)."""


def check_name(field: str, value: object, *, allow_slash: bool = True) -> str:
    if type(value) is str:  # a str subclass takes the full path
        known = _NAMES.get((field, value, allow_slash))
        if known is not None:
            return known
    name = _check_name(field, value, allow_slash)
    if type(value) is str and name == value:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[(field, value, allow_slash)] = name
    return name


def _check_name(field: str, value: object, allow_slash: bool) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    _utf8(field, value)
    value = value.strip()
    if not value:
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_NAME:
        raise InvalidInput(field, f"longer than {MAX_NAME} characters")
    if not allow_slash and "/" in value:
        raise InvalidInput(field, "must not contain '/'")
    if _CONTROL.search(value):
        raise InvalidInput(field, "must not contain control characters")
    redacted = redact(value)  # names, ids, types and units are redacted like free text
    if len(redacted) > MAX_NAME:
        raise InvalidInput(field, f"longer than {MAX_NAME} characters once redacted")
    return redacted


def check_json(field: str, value: object, *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """A JSON-serialisable, size-limited copy of ``value`` with secrets redacted."""
    try:
        raw = orjson.dumps(value)
    except TypeError as exc:
        raise InvalidInput(field, f"not JSON-serialisable ({exc})") from None
    if len(raw) > limit:
        raise InvalidInput(field, f"payload of {len(raw)} bytes exceeds {limit} bytes")
    _reject_non_finite(field, value)  # the input: orjson has already written NaN/inf as null
    return redact_obj(orjson.loads(raw))


def _reject_non_finite(field: str, data: Any) -> None:
    if isinstance(data, float) and not math.isfinite(data):
        raise InvalidInput(field, "contains NaN or infinity")
    if isinstance(data, dict):
        for v in data.values():
            _reject_non_finite(field, v)
    elif isinstance(data, list | tuple):
        for v in data:
            _reject_non_finite(field, v)


def check_timestamp(field: str, value: object, now: float | None = None) -> float:
    if value is None:
        return time.time() if now is None else now
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(field, f"must be a unix timestamp, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:
        raise InvalidInput(field, "must be a positive finite unix timestamp") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(field, "must be a positive finite unix timestamp")
    limit = (time.time() if now is None else now) + FUTURE_SKEW_S
    if value > limit:
        raise InvalidInput(field, "is more than 5 minutes in the future")
    if value < limit - FUTURE_SKEW_S - MAX_AGE_DAYS * 86_400:
        raise InvalidInput(field, f"is more than {MAX_AGE_DAYS} days old (it would never be "
                           "counted)")
    return value


def check_text(field: str, value: object, *, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInput(field, f"longer than {limit} characters")
    _utf8(field, value)
    return redact(value)


class _Record(BaseModel):
    # hide_input_in_errors: a ValidationError (and so a log line) never repeats a secret
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False,
                              hide_input_in_errors=True)

    @classmethod
    def checked(cls, **data: Any) -> Self:
        """The record, or InvalidInput naming the first field that is wrong."""
        try:
            return cls(**data)
        except ValidationError as exc:
            raise cls._invalid(exc) from None

    @classmethod
    def from_mapping(cls, what: str, data: Mapping[Any, Any]) -> Self:
        """``checked`` for a mapping of the fields (a caller's dict), without unpacking it;
        a field name that is not a string is named as the error of ``what``."""
        try:
            return cls.model_validate(data if type(data) is dict else dict(data))
        except ValidationError as exc:
            if any(not isinstance(k, str) for k in data):
                raise InvalidInput(what, "field names must be strings") from None
            raise cls._invalid(exc) from None

    @classmethod
    def _invalid(cls, exc: ValidationError) -> InvalidInput:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, InvalidInput):  # a whole-record check names its own field
            return InvalidInput(cause.field, str(cause).partition(": ")[2])
        field = ".".join(str(p) for p in err["loc"]) or cls.__name__
        return InvalidInput(field, err["msg"])


class PerformanceMetric(_Record):
    """One measurement; folded into time-bucketed sketches, never stored individually."""

    source_agent: str
    name: str
    value: float
    unit: str | None = None
    timestamp: float | None = None

    @field_validator("source_agent")
    @classmethod
    def _agent(cls, v: str) -> str:
        return check_name("source_agent", v, allow_slash=False)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("name", v)

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, v: object) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"must be a number, got {type(v).__name__}")
        if isinstance(v, int) and abs(v) > MAX_METRIC:  # float() of a huge int overflows
            raise ValueError(f"magnitude above {MAX_METRIC:g} (sums would overflow)")
        if not math.isfinite(float(v)):
            raise ValueError("must be finite (no NaN or infinity)")
        if abs(float(v)) > MAX_METRIC:
            raise ValueError(f"magnitude above {MAX_METRIC:g} (sums would overflow)")
        return float(v)

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None) -> str | None:
        return None if v is None else check_name("unit", v)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts(cls, v: object) -> float | None:
        return None if v is None else check_timestamp("timestamp", v)

    @property
    def series(self) -> str:
        return f"{self.source_agent}/{self.name}"


OptimizationOutcome = Literal["proposed", "applied", "kept", "rolled_back", "failed", "skipped"]


class OptimizationRecord(_Record):
    """One step of an optimization cycle; records with the same id are versions of one cycle."""

    optimization_type: str
    target: str
    before: dict[str, Any] = Field(default_factory=dict)
    after: dict[str, Any] = Field(default_factory=dict)
    outcome: OptimizationOutcome = "applied"
    success: bool = True
    source_agent: str = "coordinator"
    details: dict[str, Any] = Field(default_factory=dict)
    record_id: str = Field(default_factory=lambda: f"opt_{uuid.uuid4().hex[:16]}")
    timestamp: float | None = None

    @field_validator("optimization_type", "target", "source_agent", "record_id")
    @classmethod
    def _names(cls, v: str, info: Any) -> str:
        return check_name(info.field_name, v)

    @field_validator("before", "after", "details")
    @classmethod
    def _json(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        return check_json(info.field_name, v)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts(cls, v: object) -> float | None:
        return None if v is None else check_timestamp("timestamp", v)

    @model_validator(mode="after")
    def _typed(self) -> OptimizationRecord:
        check_tuning(self.optimization_type, self.before, self.details)
        return self


# Agent settings the optimizer tunes (``agents.<id>.<param>`` in the config). A record whose
# details carry any verification field (``param``, ``verify_after``, ...) is a tuning record:
# the optimizer judges it later, so its details must be complete and typed, and must change the
# parameter its ``optimization_type`` names (``batch_size`` / ``tune_batch_size``), or it is
# refused here and quarantined at the fold. Any other record is history only (free-form).
TUNABLE_PARAMS: tuple[str, ...] = ("batch_size", "page_size")
_TUNING_KEYS = ("param", "verify_after", "mark", "baseline", "applied_at")


class TuningMark(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    minute: int = Field(ge=0)
    count: int = Field(ge=0)
    sum: float = Field(allow_inf_nan=False)


class TuningDetails(BaseModel):
    """Details of a tuning record: what changed, the baseline and when to judge it."""

    model_config = ConfigDict(strict=True, extra="allow")
    param: Literal["batch_size", "page_size"]
    metric: str
    baseline: float = Field(allow_inf_nan=False)
    applied_at: float = Field(gt=0, allow_inf_nan=False)
    verify_after: float = Field(gt=0, allow_inf_nan=False)
    mark: TuningMark
    upward: bool = True
    baseline_samples: int = Field(0, ge=0)


def tuning_param(optimization_type: str, details: dict[str, Any]) -> str | None:
    """The parameter a tuning record changes, or None for a record that is history only."""
    if not any(k in details for k in _TUNING_KEYS):
        return None
    named = optimization_type.removeprefix("tune_")
    return named if named in TUNABLE_PARAMS else str(details.get("param"))


def check_tuning(optimization_type: str, before: dict[str, Any],
                 details: dict[str, Any]) -> TuningDetails | None:
    """Typed details of a tuning record (None if it is not one); InvalidInput names the field."""
    param = tuning_param(optimization_type, details)
    if param is None:
        return None
    try:
        typed = TuningDetails.model_validate(details)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"details.{loc}", f"{err['msg']} (a {optimization_type!r} record "
                           "is a tuning record)") from None
    if typed.param != param:
        raise InvalidInput("details.param", f"{typed.param!r} does not match "
                           f"optimization_type {optimization_type!r}")
    value = before.get(param)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"before.{param}", "must be the number the change replaced")
    return typed

