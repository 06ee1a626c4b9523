"""Shared configuration kept in the state: defaults, validation and dotted keys.

The state stores config as dotted keys (``retention.minute_buckets``) so that concurrent
updates to different keys never overwrite each other (LWW per key). Updates are validated
against the whole merged config before anything is written.
"""

from __future__ import annotations

import re
from typing import Any

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from state.models import MAX_AGE_DAYS, InvalidInput, check_json, check_name
from state.redact import is_secret_key, redact


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    minute_buckets: int = Field(120, ge=1, le=10_080, description="1-minute buckets kept")
    hour_buckets: int = Field(168, ge=1, le=8_760, description="1-hour buckets kept")
    day_buckets: int = Field(30, ge=1, le=MAX_AGE_DAYS, description="1-day buckets kept")
    max_series: int = Field(500, ge=1, le=100_000)
    max_error_patterns: int = Field(500, ge=1, le=100_000)
    max_insights: int = Field(500, ge=1, le=100_000)
    max_optimizations: int = Field(500, ge=1, le=100_000)
    checkpoints: int = Field(100, ge=2, le=100_000, description="checkpoints kept for time travel")


class TickerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    interval_s: float = Field(5.0, gt=0, le=86_400)
    fold_batch: int = Field(200_000, ge=1, le=10_000_000)


class AgentSection(BaseModel):
    """One agent's section: how it is built, when it runs, and the knobs the optimizer tunes."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    kind: str | None = Field(None, description="registered agent kind (entry point name)")
    class_path: str | None = Field(None, alias="class", description="module:Class of the agent")
    enabled: bool = True
    interval_s: float | None = Field(None, gt=0, le=7 * 86_400)
    cron: str | None = None
    budget_s: float = Field(10.0, gt=0, le=3_600, description="time budget of one step")
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    page_size: int | None = Field(None, ge=1, le=100)
    poll_interval_s: float | None = Field(None, gt=0, le=86_400)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and not croniter.is_valid(v):
            raise ValueError(f"not a valid cron expression: {v!r}")
        return v


class LivenessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    stale_factor: float = Field(2.0, gt=1, le=1_000, description="missed intervals -> stale")
    dead_factor: float = Field(10.0, gt=1, le=10_000, description="missed intervals -> dead")
    purge_after_s: float = Field(86_400.0, gt=0, description="dead this long -> forgotten")
    quiet_after_s: float = Field(900.0, gt=0, description="no events this long -> quiet")
    worker_claim_s: float = Field(
        15.0, gt=0, le=86_400,
        description="a worker keeps its agents at least this long after its last step")
    scheduler_down_factor: float = Field(
        6.0, gt=1, le=1_000, description="ticker intervals without a tick -> scheduler down")
    scheduler_down_min_s: float = Field(
        30.0, gt=0, le=86_400, description="the scheduler is never down sooner than this")


class RulesConfig(BaseModel):
    """Thresholds of the coordinator's insight rules."""

    model_config = ConfigDict(extra="forbid", strict=True)

    window_s: int = Field(600, ge=60, le=86_400, description="current window")
    baseline_s: int = Field(3_600, ge=60, le=7 * 86_400, description="baseline window before it")
    latency_ratio: float = Field(1.5, gt=1)
    min_samples: int = Field(20, ge=1)
    error_spike_ratio: float = Field(3.0, gt=1)
    min_errors: int = Field(5, ge=1)
    recurring_errors: int = Field(10, ge=1, description="occurrences per hour -> recurring")
    throughput_drop_ratio: float = Field(0.5, gt=0, lt=1)
    cost_ratio: float = Field(2.0, gt=1, description="cost or tokens per run -> spike")
    min_node_samples: int = Field(3, ge=1, description="runs of a node to rank it slowest")
    feedback_drop: float = Field(0.2, gt=0, lt=1, description="relative fall of the mean "
                                 "feedback score (higher is better) -> feedback_drop")
    min_feedback_samples: int = Field(5, ge=1, description="scores in each window to judge")
    internal_series: list[str] = Field(
        default_factory=lambda: ["*/local/*"],
        description="the system's own series (fnmatch globs; default: the bridge's mirror of "
                    "the system graph's own traces): not judged, hidden in `bga status`")
    judge_internal: bool = Field(False, description="judge internal series like any other")
    self_reported_errors: list[str] = Field(
        default_factory=lambda: ["RowRejected"],
        description="error types their agent already turns into its own insight (the "
                    "importer's import_rejections): not judged again by the error rules")


class OptimizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool = True
    interval_s: float = Field(1_800.0, gt=0, description="time between automatic cycles")
    verify_s: float = Field(300.0, gt=0, description="verification window after a change")
    min_improvement: float = Field(0.05, ge=0, le=10, description="relative gain to keep")
    min_samples: int = Field(5, ge=1)


CHANNEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")
PRIORITY_NAMES = ("critical", "high", "medium", "low", "info")
CHANNEL_TYPES = ("webhook", "slack", "email")


class AlertChannel(BaseModel):
    """One alert channel: what it is and what it receives. Where it sends (URL, SMTP server,
    recipients) and its secrets come only from the environment of the sending process
    (``BGA_ALERT_<NAME>_URL``, ``..._SECRET``, ...; see ``graph.alerts``), never from here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field("webhook", description="webhook (signed JSON), slack (incoming "
                                             "webhook) or email")
    enabled: bool = True
    priorities: list[str] = Field(default_factory=lambda: ["critical", "high"],
                                  description="insight priorities this channel receives")
    types: list[str] = Field(default_factory=list,
                             description="insight types it receives (empty: every type)")
    exclude_types: list[str] = Field(default_factory=list, description="types it never receives")
    digest_s: float | None = Field(None, ge=0, le=86_400, description="overrides alerts.digest_s")
    repeat_s: float | None = Field(None, ge=0, le=30 * 86_400,
                                   description="overrides alerts.repeat_s")
    send_resolved: bool | None = Field(None, description="overrides alerts.send_resolved")

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in CHANNEL_TYPES:
            raise ValueError(f"must be one of {', '.join(CHANNEL_TYPES)}, got {v!r}")
        return v

    @field_validator("priorities")
    @classmethod
    def _priorities(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in PRIORITY_NAMES]
        if bad:
            raise ValueError(f"unknown priority {bad[0]!r}: use {', '.join(PRIORITY_NAMES)}")
        return v


class AlertsConfig(BaseModel):
    """Alert delivery (``nodes.notify`` decides, ``graph.alerts`` delivers)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    digest_s: float = Field(30.0, ge=0, le=86_400,
                            description="wait this long after an alert so a burst is one message")
    repeat_s: float = Field(4 * 3600.0, ge=0, le=30 * 86_400,
                            description="alert again while an insight stays open (0: never)")
    send_resolved: bool = Field(True, description="say so when an alerted insight resolves")
    retry_base_s: float = Field(5.0, gt=0, le=3_600, description="first retry after a failure")
    retry_max_s: float = Field(600.0, gt=0, le=86_400, description="longest wait between tries")
    give_up_s: float = Field(86_400.0, gt=0, le=30 * 86_400,
                             description="a message still failing after this long is dropped")
    failing_after: int = Field(3, ge=1, le=1_000,
                               description="failed tries in a row -> the channel is failing")
    timeout_s: float = Field(10.0, gt=0, le=300, description="one delivery attempt's timeout")
    max_batch: int = Field(50, ge=1, le=1_000, description="alerts in one message at most")
    channels: dict[str, AlertChannel] = Field(default_factory=dict)

    @field_validator("channels")
    @classmethod
    def _names(cls, v: dict[str, AlertChannel]) -> dict[str, AlertChannel]:
        for name in v:
            if not CHANNEL_NAME.fullmatch(name):
                raise ValueError(f"channel name {name!r}: use letters, digits, - and _ "
                                 "(it names the channel's environment variables)")
        return v


class SystemConfig(BaseModel):
    """All configuration sections; ``agents`` holds one section per agent id."""

    model_config = ConfigDict(extra="forbid", strict=True)

    retention: RetentionConfig = RetentionConfig()
    ticker: TickerConfig = TickerConfig()
    liveness: LivenessConfig = LivenessConfig()
    rules: RulesConfig = RulesConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    alerts: AlertsConfig = AlertsConfig()
    agents: dict[str, AgentSection] = Field(default_factory=dict)


# Built-in agents every system runs unless disabled (``agents.<id>.enabled = false``).
DEFAULTS: dict[str, Any] = {
    "agents.system_monitor.kind": "system_monitor",
    "agents.system_monitor.interval_s": 30.0,
    "agents.langsmith_bridge.kind": "langsmith_bridge",
    "agents.langsmith_bridge.interval_s": 30.0,
    "agents.langsmith_bridge.poll_interval_s": 30.0,
    "agents.langsmith_bridge.page_size": 100,
    "agents.profile_import.kind": "profile_import",
    "agents.profile_import.interval_s": 30.0,
    "agents.profile_import.batch_size": 2000,
}


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
            if not isinstance(node, dict):
                raise InvalidInput(dotted, f"{p!r} is a value here, not a section")
        if isinstance(node.get(leaf), dict) and not isinstance(value, dict):
            raise InvalidInput(dotted, "is a section here, not a value")
        node[leaf] = value
    return out


def effective(flat_stored: dict[str, Any]) -> SystemConfig:
    """Config as stored in the state, on top of the defaults."""
    return SystemConfig.model_validate(unflatten({**DEFAULTS, **flat_stored}))


def validate_updates(current_flat: dict[str, Any], updates: dict[str, Any],
                     known_agents: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Validated dotted updates; raises InvalidInput naming the key and writes nothing.

    An agent section must name an agent that is registered or configured, or say how to build
    it (``kind`` or ``class``).
    """
    if not isinstance(updates, dict) or not updates:
        raise InvalidInput("updates", "must be a non-empty dict")
    flat = flatten(updates)
    for key in flat:
        if redact(key) != key:  # InvalidInput redacts the key it names
            raise InvalidInput(key, "a configuration key must not contain a credential")
        if any(is_secret_key(part) for part in key.split(".")):
            raise InvalidInput(
                key, "secrets never go into shared state; set them in the environment or .env"
            )
    # JSON-safe values only (NaN/inf would be stored as null and break every later read),
    # size-limited, secrets redacted
    flat = {key: check_json(key, value) for key, value in flat.items()}
    merged = {**DEFAULTS, **current_flat, **flat}
    for key in flat:
        parts = key.split(".")
        if parts[0] == "agents" and len(parts) > 1:
            agent = parts[1]
            check_name(f"agents.{agent}", agent, allow_slash=False)
            buildable = any(f"agents.{agent}.{k}" in merged for k in ("kind", "class"))
            if agent not in known_agents and not buildable:
                raise InvalidInput(f"agents.{agent}",
                                   f"unknown agent {agent!r}: register it or give its kind")
    try:
        SystemConfig.model_validate(unflatten(merged))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(field or "config", err["msg"]) from None
    return flat
