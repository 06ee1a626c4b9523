"""The alert sender: moves alerts from the state to the outbox and from the outbox to people.

One pass (``Sender.pass_once``), repeated by ``bga alerts run`` (``run``):

1. copy the alerts the ticks wrote into the state (``nodes.notify``) into the outbox table
   (``state.outbox``; keyed by idempotency key, so a copy made twice counts once);
2. judge the scheduler itself (``state.queries.scheduler_liveness``): while it is down no tick
   runs, so this sender raises ``scheduler_down`` (an insight through the API, and an alert
   straight into the outbox) and says when it is back;
3. per channel, once the oldest waiting alert is ``digest_s`` old, put the waiting alerts
   (at most ``max_batch``) into one message with its own idempotency key, fixed before the
   first try;
4. send due messages, all channels at once, each try bounded by ``timeout_s``; a failed try
   (timeout, connection error, 429, 5xx, any refusal) is retried after a doubling wait from
   ``retry_base_s`` up to ``retry_max_s`` (longer if the receiver's ``Retry-After`` asks),
   and dropped after ``give_up_s``. Each failure is an error pattern (``AlertDeliveryFailed``)
   and ``failing_after`` failures in a row make the insight ``alert_channel_failing`` (high),
   resolved by the next success. A failing channel never holds up the others or a tick.

Where a channel sends and its secrets come only from the environment of this process (or
``.env``), by the channel's name (``ops-hook`` -> ``BGA_ALERT_OPS_HOOK_...``):

==============================  ==========================================================
``BGA_ALERT_<NAME>_URL``         webhook / Slack: the URL to POST to; e-mail:
                                 ``smtp://[user@]host[:port]`` (``smtps://`` for TLS,
                                 ``smtp+starttls://`` for STARTTLS)
``BGA_ALERT_<NAME>_SECRET``      webhook: the HMAC-SHA256 key (required)
``BGA_ALERT_<NAME>_PASSWORD``    e-mail: the SMTP password (optional)
``BGA_ALERT_<NAME>_FROM``        e-mail: sender address (default ``bga@<host>``)
``BGA_ALERT_<NAME>_TO``          e-mail: recipients, comma separated (required)
==============================  ==========================================================

Signed webhook: ``X-BGA-Signature: sha256=<hex>`` is HMAC-SHA256 with the secret over
``<X-BGA-Timestamp> + "." + <raw body bytes>``; ``Idempotency-Key`` is the message's key and
every alert in ``alerts`` has its own ``idempotency_key``. Why not ``apprise``: its
``notify()`` answers only True or False, so a 429's ``Retry-After``, a 5xx and a refusal look
the same, a body cannot be signed and headers cannot carry the key; these clients are small
(httpx, smtplib) and report what the receiver said.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from nodes.notify import CHANNEL_FAILING, alert_key, outbox_entries
from state import events, lifecycle
from state.api import SharedState
from state.config import AlertChannel, AlertsConfig
from state.models import InvalidInput
from state.outbox import OutboxStore
from state.queries import config_of, scheduler_liveness
from state.redact import redact

SENDER = "alerts"  # producer and source agent of what the sender records
SCHEDULER = "scheduler"  # subject of the scheduler_down alerts
USER_AGENT = "background-agents-alerts/1"
Clock = Callable[[], float]
Log = Callable[[str], None]


class ChannelNotConfigured(InvalidInput):
    """The environment of this process does not say where a channel sends."""


def env_prefix(name: str) -> str:
    return f"BGA_ALERT_{name.upper().replace('-', '_')}_"


def process_env() -> dict[str, str]:
    """This process's environment on top of ``.env`` (as ``state.settings`` reads it)."""
    from dotenv import dotenv_values

    file_values = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    return {**file_values, **os.environ}


@dataclass
class Target:
    """Where one channel sends, from the environment: never stored, logged or shown."""

    name: str
    type: str
    url: str
    secret: str | None = None
    password: str | None = None
    sender: str | None = None
    to: list[str] = field(default_factory=list)

    def scrub(self, text: str) -> str:
        """``text`` without this target's URL, its path or secrets (error messages quote
        them), then through the one redaction rule."""
        for secret in (self.url, urlsplit(self.url).path, self.secret, self.password):
            if secret and len(secret) > 1:
                text = text.replace(secret, "<hidden>")
        return redact(text)


def target(name: str, channel: AlertChannel, env: Mapping[str, str]) -> Target:
    """The channel's destination from ``env``; ChannelNotConfigured names what is missing."""
    prefix = env_prefix(name)

    def get(key: str) -> str | None:
        value = (env.get(prefix + key) or "").strip()
        return value or None

    url = get("URL")
    if url is None:
        raise ChannelNotConfigured(f"alerts.channels.{name}",
                                   f"{prefix}URL is not set in this process's environment; "
                                   "where a channel sends comes only from there")
    scheme = urlsplit(url).scheme.lower()
    if channel.type in ("webhook", "slack") and scheme not in ("http", "https"):
        raise ChannelNotConfigured(f"alerts.channels.{name}",
                                   f"{prefix}URL must be an http(s) URL for a {channel.type} "
                                   "channel")
    out = Target(name, channel.type, url, secret=get("SECRET"), password=get("PASSWORD"),
                 sender=get("FROM"),
                 to=[a.strip() for a in (get("TO") or "").split(",") if a.strip()])
    if channel.type == "webhook" and out.secret is None:
        raise ChannelNotConfigured(f"alerts.channels.{name}",
                                   f"{prefix}SECRET is not set: a webhook is always signed")
    if channel.type == "email":
        if scheme not in ("smtp", "smtps", "smtp+starttls"):
            raise ChannelNotConfigured(f"alerts.channels.{name}",
                                       f"{prefix}URL must be smtp://, smtps:// or "
                                       "smtp+starttls:// for an email channel")
        if not out.to:
            raise ChannelNotConfigured(f"alerts.channels.{name}",
                                       f"{prefix}TO is not set: no recipient")
    return out


# -- messages ---------------------------------------------------------------------------------


def message_key(channel: str, alert_keys: list[str]) -> str:
    """Idempotency key of a message: its channel and the alerts it carries."""
    digest = hashlib.blake2b("\n".join([channel, *sorted(alert_keys)]).encode(), digest_size=12)
    return f"msg_{digest.hexdigest()}"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-BGA-Signature`` header value: HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *,
           now: float | None = None, tolerance_s: float = 300.0) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return False
    try:
        at = float(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - at) <= tolerance_s


def _line(alert: dict[str, Any]) -> str:
    """One line per alert: whitespace (line breaks too) collapsed, so user text can neither
    add e-mail headers nor break the layout."""
    event = alert["event"]
    tag = {"resolved": "RESOLVED", "repeat": "STILL OPEN", "test": "TEST"}.get(
        event, str(alert["priority"]).upper())
    return " ".join(f"[{tag}] {alert['insight_type']}: {alert['summary']}".split())


def slack_text(text: str) -> str:
    """Slack's control characters escaped: an insight cannot ping ``<!channel>`` or make a
    link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def title(alerts: list[dict[str, Any]]) -> str:
    if len(alerts) == 1:
        return f"[bga] {_line(alerts[0])}"[:200]
    counts: dict[str, int] = {}
    for a in alerts:
        counts[a["event"]] = counts.get(a["event"], 0) + 1
    parts = ", ".join(f"{n} {event}" for event, n in sorted(counts.items()))
    return f"[bga] {len(alerts)} alerts: {parts}"


def webhook_body(key: str, channel: str, alerts: list[dict[str, Any]], at: float) -> bytes:
    return orjson.dumps({
        "idempotency_key": key, "channel": channel, "sent_at": at, "title": title(alerts),
        "alerts": [{"idempotency_key": a["key"], **{k: v for k, v in a.items()
                                                    if k not in ("key", "channel")}}
                   for a in alerts]}, option=orjson.OPT_SORT_KEYS)


def slack_body(key: str, alerts: list[dict[str, Any]]) -> bytes:
    lines = [f"*{slack_text(title(alerts))}*",
             *(f"- {slack_text(_line(a))} (`{a['key']}`)" for a in alerts[:20])]
    if len(alerts) > 20:
        lines.append(f"... and {len(alerts) - 20} more")
    lines.append(f"idempotency key `{key}`")
    return orjson.dumps({"text": "\n".join(lines), "idempotency_key": key})


def email_message(key: str, t: Target, alerts: list[dict[str, Any]], at: float
                  ) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = title(alerts)
    msg["From"] = t.sender or f"bga@{socket.gethostname()}"
    msg["To"] = ", ".join(t.to)
    msg["Date"] = formatdate(at)
    msg["Message-ID"] = f"<{key}@background-agents>"  # the idempotency key, as mail has it
    msg["X-BGA-Idempotency-Key"] = key
    body = [_line(a) + f"\n  key {a['key']}, insight {a['insight_id']}, "
            f"source {a.get('source_agent')}" for a in alerts]
    msg.set_content("\n\n".join(body) + f"\n\nmessage {key}\n")
    return msg


# -- one try -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    ok: bool
    error: str | None = None
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


async def _post(client: httpx.AsyncClient, t: Target, body: bytes, headers: dict[str, str]
                ) -> Outcome:
    try:
        resp = await client.post(t.url, content=body, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    except httpx.TimeoutException:
        return Outcome(False, "timed out")
    except httpx.HTTPError as exc:
        return Outcome(False, t.scrub(f"{type(exc).__name__}: {exc}"))
    if 200 <= resp.status_code < 300:
        return Outcome(True)
    kind = "rate limited" if resp.status_code == 429 else \
        "server error" if resp.status_code >= 500 else "refused"
    return Outcome(False, t.scrub(f"HTTP {resp.status_code} ({kind}): {resp.text[:200]}"),
                   _retry_after(resp.headers.get("Retry-After")))


def _smtp_send(t: Target, msg: EmailMessage, timeout: float) -> None:
    parts = urlsplit(t.url)
    scheme = parts.scheme.lower()
    host = parts.hostname or "localhost"
    port = parts.port or (465 if scheme == "smtps" else 25)
    smtp: smtplib.SMTP
    if scheme == "smtps":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        if scheme == "smtp+starttls":
            smtp.starttls(context=ssl.create_default_context())
        if parts.username:
            smtp.login(unquote(parts.username), t.password or unquote(parts.password or ""))
        smtp.send_message(msg)


async def send_message(t: Target, key: str, alerts: list[dict[str, Any]], *, now: float,
                       timeout_s: float) -> Outcome:
    """One try of one message to one channel; never raises for the receiver's failures."""
    if t.type == "email":
        try:
            await asyncio.wait_for(asyncio.to_thread(
                _smtp_send, t, email_message(key, t, alerts, now), timeout_s), timeout_s * 2)
        except TimeoutError:
            return Outcome(False, "timed out")
        except smtplib.SMTPResponseException as exc:
            return Outcome(False, t.scrub(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"))
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome(False, t.scrub(f"{type(exc).__name__}: {exc}"))
        return Outcome(True)
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        if t.type == "slack":
            return await _post(client, t, slack_body(key, alerts), {"Idempotency-Key": key})
        body = webhook_body(key, t.name, alerts, now)
        stamp = f"{now:.3f}"
        return await _post(client, t, body, {
            "Idempotency-Key": key, "X-BGA-Timestamp": stamp,
            "X-BGA-Signature": sign(t.secret or "", stamp, body)})


def backoff_s(cfg: AlertsConfig, attempts: int, retry_after: float | None) -> float:
    """Wait before the next try after ``attempts`` failed ones: doubling from
    ``retry_base_s`` up to ``retry_max_s``, at least what ``Retry-After`` asked."""
    delay = min(cfg.retry_max_s, cfg.retry_base_s * 2 ** max(0, attempts - 1))
    return max(delay, retry_after or 0.0)


# -- the sender ----------------------------------------------------------------------------------


@dataclass
class PassReport:
    relayed: int = 0
    messages: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0


class Sender:
    """Relay, group and send (module docstring). ``clock`` is the time it judges by (tests
    pass a fake one); ``env`` replaces the process environment for channel targets."""

    def __init__(self, shared: SharedState, store: OutboxStore, *, clock: Clock = time.time,
                 env: Mapping[str, str] | None = None, log: Log = print) -> None:
        self.shared, self.store, self.clock, self.log = shared, store, clock, log
        self.env = env
        self.fails: dict[str, int] = {}
        # the last checkpoint's values: a pass between ticks reads only the inbox, not the
        # whole state again (``SharedState.read(cache=)``; never mutated here)
        self._read_cache: dict[str, Any] = {}

    def _env(self) -> Mapping[str, str]:
        return self.env if self.env is not None else process_env()

    async def pass_once(self) -> PassReport:
        report = PassReport()
        state = await self.shared.read(cache=self._read_cache)
        config = config_of(state)
        cfg = config.alerts
        now = self.clock()
        report.relayed = await self.store.enqueue(outbox_entries(state), now)
        report.relayed += await self._scheduler(state, now)
        for name, channel in sorted(cfg.channels.items()):
            waiting = await self.store.unbatched(name)
            digest = cfg.digest_s if channel.digest_s is None else channel.digest_s
            while waiting and waiting[0]["created_at"] + digest <= now:
                chunk, waiting = waiting[:cfg.max_batch], waiting[cfg.max_batch:]
                keys = [a["key"] for a in chunk]
                await self.store.make_message(message_key(name, keys), name, keys, now)
                report.messages += 1
        due: dict[str, list[dict[str, Any]]] = {}
        for msg in await self.store.due(now):
            due.setdefault(msg["channel"], []).append(msg)
        env = self._env()
        results = await asyncio.gather(*(self._deliver(state, cfg, name, msgs, env, now)
                                          for name, msgs in sorted(due.items())))
        for sent, failed, dropped in results:
            report.sent += sent
            report.failed += failed
            report.dropped += dropped
        return report

    async def _deliver(self, state: dict[str, Any], cfg: AlertsConfig, name: str,
                       msgs: list[dict[str, Any]], env: Mapping[str, str], now: float
                       ) -> tuple[int, int, int]:
        """Send one channel's due messages in order; stop at the first failure (the rest
        wait for the next try, so a down receiver costs one timeout per pass)."""
        sent = failed = dropped = 0
        channel = cfg.channels.get(name)
        for msg in msgs:
            try:
                if channel is None:
                    raise ChannelNotConfigured(f"alerts.channels.{name}",
                                               "the channel is no longer configured")
                t = target(name, channel, env)
            except ChannelNotConfigured as exc:
                outcome = Outcome(False, str(exc))
            else:
                try:
                    outcome = await send_message(t, msg["key"], msg["alerts"], now=now,
                                                 timeout_s=cfg.timeout_s)
                except Exception as exc:  # a bug or odd data: this message fails, not the pass
                    outcome = Outcome(False, t.scrub(f"{type(exc).__name__}: {exc}"))
            if outcome.ok:
                await self.store.record(msg["key"], now=now, ok=True)
                sent += 1
                await self._recovered(state, name)
                continue
            attempts = msg["attempts"] + 1
            wait = backoff_s(cfg, attempts, outcome.retry_after)
            drop = now + wait > msg["created_at"] + cfg.give_up_s
            await self.store.record(msg["key"], now=now, ok=False, error=outcome.error,
                                    next_at=now + wait, drop=drop)
            failed += 1
            dropped += drop
            self.log(f"alert channel {name}: message {msg['key']} failed (try {attempts}): "
                     f"{outcome.error}; " + ("dropped after alerts.give_up_s" if drop
                                             else f"retrying in {wait:g} s"))
            await self._failing(name, outcome.error or "failed", msg, attempts)
            break
        return sent, failed, dropped

    def _failing_id(self, name: str) -> str:
        return events.insight_id(CHANNEL_FAILING, SENDER, f"{CHANNEL_FAILING}:{name}")

    async def _failing(self, name: str, error: str, msg: dict[str, Any], attempts: int
                       ) -> None:
        self.fails[name] = self.fails.get(name, 0) + 1
        cfg = config_of(await self.shared.read()).alerts
        await self.shared.add_error_pattern("AlertDeliveryFailed",
                                            f"alert channel {name}: {error}", SENDER)
        if self.fails[name] == cfg.failing_after:
            await self.shared.add_insight(
                CHANNEL_FAILING,
                {"channel": name, "error": error, "failures_in_a_row": self.fails[name],
                 "message": msg["key"], "tries_of_message": attempts,
                 "summary": f"alert channel {name} keeps failing: {error}"[:300]},
                SENDER, "high", dedupe_key=f"{CHANNEL_FAILING}:{name}")

    async def _recovered(self, state: dict[str, Any], name: str) -> None:
        self.fails[name] = 0
        iid = self._failing_id(name)
        rec = (state.get("insights") or {}).get(iid)
        if rec and rec.get("body") and lifecycle.view(rec, self.clock(), {})["status"] \
                != "resolved":
            await self.shared.update_insights([iid], "resolve", missing_ok=True)

    async def _scheduler(self, state: dict[str, Any], now: float) -> int:
        """``scheduler_down`` while no tick runs (no tick can alert it), and its resolution."""
        config = config_of(state)
        live = scheduler_liveness(state, config, now)
        if live["verdict"] not in ("down", "running"):
            return 0
        spell = live["last_tick_at"]
        iid = events.insight_id("scheduler_down", SENDER, f"scheduler_down:{spell}")
        body = {"insight_type": "scheduler_down", "priority": "critical",
                "source_agent": SENDER}
        new: list[dict[str, Any]] = []
        for name, channel in sorted(config.alerts.channels.items()):
            if not channel.enabled or "critical" not in channel.priorities \
                    or "scheduler_down" in channel.exclude_types \
                    or (channel.types and "scheduler_down" not in channel.types):
                continue
            last = await self.store.last_event(name, SCHEDULER) or {}
            down_before = last.get("event") == "firing"
            if live["verdict"] == "down" and not (down_before and last.get("spell") == spell):
                event = "firing"
                summary = (f"scheduler down: no tick for {live['age_s']:.0f} s (expected "
                           f"every {live['expected_interval_s']:g} s)")
                at = spell
            elif live["verdict"] == "running" and down_before:
                event, summary, at = "resolved", "scheduler is ticking again", last["spell"]
                iid = last["insight_id"]
            else:
                continue
            new.append({**body, "key": alert_key(name, SCHEDULER, event, at), "channel": name,
                        "event": event, "subject": SCHEDULER, "insight_id": iid,
                        "status": "open" if event == "firing" else "resolved",
                        "summary": summary, "content": {k: live[k] for k in (
                            "last_tick_at", "age_s", "expected_interval_s", "down_after_s",
                            "coordinator")},
                        "spell": at, "at": now})
        added = await self.store.enqueue(new, now)
        if added and any(a["event"] == "firing" for a in new):
            await self.shared.add_insight("scheduler_down", {
                **new[0]["content"], "summary": new[0]["summary"]}, SENDER, "critical",
                dedupe_key=f"scheduler_down:{spell}")
        elif added:
            await self.shared.update_insights([new[0]["insight_id"]], "resolve",
                                              missing_ok=True)
        return added

    async def test(self, name: str) -> Outcome:
        """Send a test message to channel ``name`` now (one try), recorded in the history."""
        state = await self.shared.read()
        cfg = config_of(state).alerts
        channel = cfg.channels.get(name)
        if channel is None:
            known = ", ".join(sorted(cfg.channels)) or "none configured"
            raise InvalidInput("channel", f"no alert channel {name!r} (channels: {known})")
        t = target(name, channel, self._env())
        now = self.clock()
        alert: dict[str, Any] = {
            "key": alert_key(name, "test", "test", now), "channel": name, "event": "test",
            "subject": "test", "insight_id": "test", "insight_type": "test",
            "priority": "info", "source_agent": SENDER, "status": "open",
            "summary": f"test message to alert channel {name}", "content": {}, "at": now}
        key = message_key(name, [alert["key"]])
        outcome = await send_message(t, key, [alert], now=now, timeout_s=cfg.timeout_s)
        await self.store.add_sent(key, name, now, ok=outcome.ok, error=outcome.error,
                                  alert=alert)
        return outcome


async def run(shared: SharedState, store: OutboxStore, *, stop: asyncio.Event,
              interval_s: float = 1.0, log: Log = print, clock: Clock = time.time,
              env: Mapping[str, str] | None = None, max_passes: int | None = None) -> int:
    """Pass until ``stop``: one sender per database (the backend's sender lock, a lease; a
    second stands by, and a sender that lost its lease stands down and competes again).
    Database trouble is one line and a doubling wait, never an exit. ``env`` replaces the
    process environment for channel targets (tests)."""
    from graph.scheduler import Backoff, _sleep_until, compete

    backend = shared.backend
    sender = Sender(shared, store, clock=clock, env=env, log=log)
    backoff = Backoff(log, backend.where)
    passes = 0
    while not stop.is_set() and (max_passes is None or passes < max_passes):
        lock = await compete(
            lambda wait: backend.sender_lock(wait=wait), stop, log, backoff,
            f"another alert sender is running on {backend.where}; standing by",
            "took over as the alert sender", "cannot compete for the alert sender lock")
        if lock is None:
            break
        try:
            while not stop.is_set() and (max_passes is None or passes < max_passes):
                try:
                    if not await backend.holds("alerts"):
                        log("lost the alert sender lock (its lease lapsed, was taken over, or "
                            "went with its database session); standing by")
                        break
                    await sender.pass_once()
                    await store.prune(clock())
                except Exception as exc:
                    await backoff.trouble(exc, stop, "alert pass failed")
                    continue
                backoff.ok()
                passes += 1
                await _sleep_until(stop, interval_s)
        finally:
            with contextlib.suppress(Exception):  # its session may be gone already
                await lock.__aexit__(None, None, None)
    return passes
