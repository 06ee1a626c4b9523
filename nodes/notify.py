"""The ``notify`` step of the system graph: which insights to tell people about, and where.

Runs last in a tick and does no I/O: it is a pure function of the state, the configuration
(``alerts.*``) and the clock, so it can never hold a tick up. For every enabled channel
(``alerts.channels.<name>``) and every insight the channel routes (priority in ``priorities``,
default critical and high; type in ``types`` if given; not in ``exclude_types``) it compares
what the insight is now (``state.lifecycle.view``) with what was last sent for it on that
channel (``n:<channel>:<insight id>`` in the ``alerts`` channel):

- ``firing``: active (open or regressed, not muted) and not alerted since it last went quiet;
- ``repeat``: still active ``repeat_s`` after the last alert (0: never);
- ``resolved``: alerted, and now resolved (when ``send_resolved``);
- acknowledged or muted after an alert: nothing is sent, repeats stop; if it fires again it
  is a new ``firing``.

Each alert is an entry ``o:<key>`` of the same channel, so it is committed in the same
checkpoint as the insight change that caused it: a crash either loses both (and the next
tick decides again) or neither. ``key`` is the alert's idempotency key, unique per channel,
insight, event and tick. The sender (``graph.alerts``) copies the entries into the outbox
table; entries older than ``alerts.give_up_s`` leave the state.

Insights of type ``scheduler_down`` are sent by the sender itself (no tick runs while the
scheduler is down), and a channel never receives the ``alert_channel_failing`` insight about
itself.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from langgraph.types import Overwrite

from state import lifecycle
from state.config import AlertChannel, AlertsConfig
from state.queries import config_of, each
from state.schema import SystemState

NOTIFY = "notify"
SENT_PREFIX = "n:"
OUTBOX_PREFIX = "o:"
MAX_OUTBOX = 2_000
SENDER_TYPES = frozenset({"scheduler_down"})  # raised and sent by the sender (graph.alerts)
CHANNEL_FAILING = "alert_channel_failing"
NODE_ORIGIN = 0


def alert_key(channel: str, subject: str, event: str, at: float) -> str:
    """Idempotency key of one alert: the same alert always has the same key."""
    digest = hashlib.blake2b(f"{channel}\n{subject}\n{event}\n{at!r}".encode(), digest_size=12)
    return f"alt_{digest.hexdigest()}"


def routes(name: str, channel: AlertChannel, body: dict[str, Any]) -> bool:
    """Whether channel ``name`` receives insights like ``body``."""
    kind = body["insight_type"]
    if kind in SENDER_TYPES or kind in channel.exclude_types:
        return False
    if channel.types and kind not in channel.types:
        return False
    if kind == CHANNEL_FAILING and (body.get("content") or {}).get("channel") == name:
        return False
    return body["priority"] in channel.priorities


def alert_entry(channel: str, event: str, subject: str, body: dict[str, Any],
                rec: dict[str, Any], status: str, now: float) -> dict[str, Any]:
    """What one alert says (the sender's payload item): never a secret, only state data."""
    content = body.get("content") or {}
    return {"key": alert_key(channel, subject, event, now), "channel": channel,
            "event": event, "subject": subject, "insight_id": subject,
            "insight_type": body["insight_type"], "priority": body["priority"],
            "source_agent": body.get("source_agent"), "status": status,
            "summary": str(content.get("summary") or body["insight_type"])[:500],
            "content": content, "occurrences": rec.get("occurrences"),
            "first_seen": rec.get("first_seen"), "last_seen": rec.get("last_seen"), "at": now}


def _decide(name: str, channel: AlertChannel, cfg: AlertsConfig, iid: str,
            rec: dict[str, Any], sent: dict[str, Any] | None, now: float,
            mutes: dict[str, float]) -> tuple[str | None, str] | None:
    """(event to send or None, new phase), or None when nothing changes."""
    body = rec.get("body")
    if not body or not routes(name, channel, body):
        return None
    view = lifecycle.view(rec, now, mutes)
    phase = (sent or {}).get("phase")
    repeat = cfg.repeat_s if channel.repeat_s is None else channel.repeat_s
    resolved_too = cfg.send_resolved if channel.send_resolved is None else channel.send_resolved
    if view["active"]:
        if phase != "firing":
            return "firing", "firing"
        if repeat and now - float((sent or {}).get("at") or 0) >= repeat:
            return "repeat", "firing"
        return None
    if phase == "firing" or (phase == "quiet" and view["status"] == "resolved"):
        if view["status"] == "resolved":
            return ("resolved" if resolved_too else None), "resolved"
        return None, "quiet"  # acknowledged or muted: no repeats, a new firing if it returns
    return None


def plan(state: dict[str, Any], now: float) -> dict[str, dict[str, Any]] | None:
    """The ``alerts`` channel after this tick, or None if nothing changed."""
    cfg = config_of(state).alerts
    current: dict[str, dict[str, Any]] = dict(state.get("alerts") or {})
    insights = state.get("insights") or {}
    mutes = lifecycle.type_mutes(state)
    out = dict(current)
    seq = 0

    def stamp() -> list:
        nonlocal seq
        seq += 1
        return [now, NODE_ORIGIN, seq]

    for name, channel in sorted(cfg.channels.items()):
        if not channel.enabled:
            continue

        def one(iid: str, rec: dict[str, Any], name: str = name,
                channel: AlertChannel = channel) -> None:
            sent_key = f"{SENT_PREFIX}{name}:{iid}"
            sent = (current.get(sent_key) or {}).get("value")
            decided = _decide(name, channel, cfg, iid, rec, sent, now, mutes)
            if decided is None:
                return
            event, phase = decided
            value = {"phase": phase, "at": (sent or {}).get("at"), "key": (sent or {}).get("key")}
            if event is not None:
                status = lifecycle.view(rec, now, mutes)["status"]
                entry = alert_entry(name, event, iid, rec["body"], rec, status, now)
                out[f"{OUTBOX_PREFIX}{entry['key']}"] = {"value": entry, "stamp": stamp()}
                value = {"phase": phase, "at": now, "key": entry["key"]}
            out[sent_key] = {"value": value, "stamp": stamp()}

        each("insights", sorted(insights.items(), key=lambda kv: str(kv[0])), one)
    # bounded: alerts past the give-up age leave, and what was sent for insights or
    # channels that are gone
    channels = {n for n, c in cfg.channels.items() if c.enabled}
    queued = sorted(((k, v) for k, v in out.items() if k.startswith(OUTBOX_PREFIX)),
                    key=lambda kv: (kv[1]["value"].get("at") or 0, kv[0]))
    keep = {k for k, v in queued[-MAX_OUTBOX:]
            if now - float(v["value"].get("at") or 0) <= cfg.give_up_s}
    for key in list(out):
        if key.startswith(OUTBOX_PREFIX) and key not in keep:
            del out[key]
        elif key.startswith(SENT_PREFIX):
            ch, _, iid = key[len(SENT_PREFIX):].partition(":")
            if ch not in channels or iid not in insights:
                del out[key]
    return None if out == current else out


def outbox_entries(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The alerts the state holds for the sender, oldest first."""
    entries = [v["value"] for k, v in (state.get("alerts") or {}).items()
               if k.startswith(OUTBOX_PREFIX) and isinstance(v, dict)
               and isinstance(v.get("value"), dict)]
    return sorted(entries, key=lambda e: (e.get("at") or 0, e.get("key") or ""))


async def notify(state: SystemState) -> dict[str, Any]:
    """Graph node: the alerts of this tick, in the same checkpoint as the insights."""
    new = plan(dict(state), time.time())
    return {} if new is None else {"alerts": Overwrite(new)}
