"""Shared configuration kept in the state: defaults, validation and dotted keys.

The state stores config as dotted keys (``retention.minute_buckets``) so that concurrent
updates to different keys never overwrite each other (LWW per key). Updates are validated
against the whole merged config before anything is written.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from state.models import InvalidInput
from state.redact import is_secret_key


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    minute_buckets: int = Field(120, ge=1, le=10_080, description="1-minute buckets kept")
    hour_buckets: int = Field(168, ge=1, le=8_760, description="1-hour buckets kept")
    day_buckets: int = Field(30, ge=1, le=3_650, description="1-day buckets kept")
    max_series: int = Field(500, ge=1, le=100_000)
    max_error_patterns: int = Field(500, ge=1, le=100_000)
    max_insights: int = Field(500, ge=1, le=100_000)
    max_optimizations: int = Field(500, ge=1, le=100_000)
    checkpoints: int = Field(100, ge=2, le=100_000, description="checkpoints kept for time travel")


class TickerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    interval_s: float = Field(5.0, gt=0, le=86_400)
    fold_batch: int = Field(200_000, ge=1, le=10_000_000)


class SystemConfig(BaseModel):
    """All configuration sections; ``agents`` holds one free-form section per agent id."""

    model_config = ConfigDict(extra="forbid", strict=True)

    retention: RetentionConfig = RetentionConfig()
    ticker: TickerConfig = TickerConfig()
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict)


def flatten(updates: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; agent sections flatten to ``agents.<id>.<key>``."""
    out: dict[str, Any] = {}
    for key, value in updates.items():
        if not isinstance(key, str) or not key:
            raise InvalidInput("config", f"keys must be non-empty strings, got {key!r}")
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def effective(flat_stored: dict[str, Any]) -> SystemConfig:
    """Config as stored in the state, on top of the defaults."""
    return SystemConfig.model_validate(unflatten(flat_stored))


def validate_updates(current_flat: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """Validated dotted updates; raises InvalidInput naming the key and writes nothing."""
    if not isinstance(updates, dict) or not updates:
        raise InvalidInput("updates", "must be a non-empty dict")
    flat = flatten(updates)
    for key in flat:
        if any(is_secret_key(part) for part in key.split(".")):
            raise InvalidInput(
                key, "secrets never go into shared state; set them in the environment or .env"
            )
    try:
        SystemConfig.model_validate(unflatten({**current_flat, **flat}))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(field or "config", err["msg"]) from None
    return flat
