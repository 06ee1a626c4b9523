"""Alert delivery end to end, with real receivers on localhost: the notify node of a real tick
writes alerts into the checkpoint, the sender (driven by a fake clock) groups and sends them
to a signed webhook, a Slack-format webhook and an SMTP server, retries, and turns a channel
that keeps failing into an insight of its own."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from graph import alerts, runner
from graph.alerts import Sender
from nodes.notify import outbox_entries
from state import SharedState
from state.models import InvalidInput
from state.outbox import OutboxStore
from tests.clock import FakeClock
from tests.integration.alert_receivers import free_port, running_receivers

SECRET = "whsec-7d1f0c3b9a2e4f6081d5"
SLACK_TOKEN = "T0000/B0000/XyZsecretSlackToken42"
SMTP_PASSWORD = "smtp-pa55-word-9f8e7d"
DIGEST_S = 30.0


@pytest.fixture
def receivers() -> Iterator[dict[str, Any]]:
    with running_receivers(SECRET) as running:
        yield running


def channel_env(receivers: dict[str, Any]) -> dict[str, str]:
    """Where the channels send: only ever in the sender's environment."""
    return {
        "BGA_ALERT_HOOK_URL": receivers["hook"].url("/hook"),
        "BGA_ALERT_HOOK_SECRET": SECRET,
        "BGA_ALERT_CHAT_URL": receivers["chat"].url(f"/services/{SLACK_TOKEN}"),
        "BGA_ALERT_MAIL_URL": f"smtp://127.0.0.1:{receivers['mail'].port}",
        "BGA_ALERT_MAIL_TO": "oncall@example.com,ops@example.com",
        "BGA_ALERT_MAIL_FROM": "bga@example.com",
        "BGA_ALERT_MAIL_PASSWORD": SMTP_PASSWORD,
    }


CHANNELS = {"hook": {"type": "webhook"}, "chat": {"type": "slack"},
            "mail": {"type": "email"}}
# the fake clock runs ahead of the last tick: the scheduler is "down" only where a test says
NO_SCHEDULER_DOWN = {"scheduler_down_min_s": 86_400.0}
QUIET_AGENTS = {a: {"enabled": False}
                for a in ("system_monitor", "langsmith_bridge", "profile_import")}


@pytest.fixture
async def shared(db_url: str) -> AsyncIterator[SharedState]:
    async with SharedState.open(db_url, producer="test") as s:
        await s.update_config({"agents": QUIET_AGENTS, "liveness": NO_SCHEDULER_DOWN,
                               "alerts": {"digest_s": DIGEST_S, "channels": CHANNELS}})
        yield s


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def cli_db_url(request: pytest.FixtureRequest) -> str:
    """A database other processes can open, on SQLite and on Redis (whose outbox is a store
    of its own): for the tests that run ``bga`` or the dashboard."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def store(shared: SharedState) -> OutboxStore:
    """The outbox of the shared state's database, on its backend's connections."""
    return shared.backend.outbox()


def delivered_keys(receivers: dict[str, Any]) -> dict[str, list[str]]:
    """Alert idempotency keys each receiver got, in order (duplicates kept)."""
    hook = [a["idempotency_key"] for c in receivers["hook"].calls for a in c.json["alerts"]]
    chat = [line.rsplit("(`", 1)[1].rstrip("`)") for c in receivers["chat"].calls
            for line in c.json["text"].splitlines() if line.startswith("- ")]
    mail = [line.split()[1].rstrip(",") for m in receivers["mail"].mails
            for line in m.message.get_payload().splitlines() if line.startswith("  key ")]
    return {"hook": hook, "chat": chat, "mail": mail}


async def test_dead_agent_reaches_every_receiver_within_a_tick_and_the_digest(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    await shared.register_agent("worker", kind="example", interval_s=0.01)
    await shared.update_agent_heartbeat("worker", {"status": "running"})
    await asyncio.sleep(0.2)  # at least 10 intervals of silence: the agent is dead
    await runner.tick(shared)
    state = await shared.read()
    dead = [i for i, r in state["insights"].items()
            if r["body"]["insight_type"] == "agent_dead"]
    assert len(dead) == 1
    queued = outbox_entries(state)  # in the same checkpoint as the insight
    assert sorted(e["channel"] for e in queued) == ["chat", "hook", "mail"]
    assert {e["insight_id"] for e in queued} == set(dead)
    assert all(e["event"] == "firing" and e["priority"] == "critical" for e in queued)

    clock = FakeClock(state["stats"]["last_tick_at"])
    sender = Sender(shared, store, clock=clock, env=channel_env(receivers), log=lambda _: None)
    report = await sender.pass_once()
    assert (report.relayed, report.messages, report.sent) == (3, 0, 0)  # digest window open
    clock.advance(DIGEST_S - 0.5)
    assert (await sender.pass_once()).sent == 0
    assert not receivers["hook"].calls
    clock.advance(0.5)  # one tick + the digest window after the agent died
    report = await sender.pass_once()
    assert (report.messages, report.sent, report.failed) == (3, 3, 0)

    keys = {e["channel"]: e["key"] for e in queued}
    got = delivered_keys(receivers)
    assert got == {"hook": [keys["hook"]], "chat": [keys["chat"]], "mail": [keys["mail"]]}
    call = receivers["hook"].calls[0]
    assert call.verified is True
    assert call.json["idempotency_key"] == call.key
    assert call.json["alerts"][0]["insight_type"] == "agent_dead"
    assert "worker" in call.json["alerts"][0]["summary"]
    assert receivers["chat"].calls[0].path == f"/services/{SLACK_TOKEN}"
    assert "agent_dead" in receivers["chat"].calls[0].json["text"]
    mail = receivers["mail"].mails[0]
    assert mail.envelope_to == ["oncall@example.com", "ops@example.com"]
    assert mail.message["Message-ID"] == f"<{mail.key}@background-agents>"
    assert "CRITICAL" in mail.message["Subject"]

    # nothing more while it stays dead (until alerts.repeat_s), and a later pass sends nothing
    await runner.tick(shared)
    clock.advance(DIGEST_S * 2)
    assert (await sender.pass_once()).messages == 0

    # it recovers (and now reports hourly, so no timing can make it stale): the coordinator
    # resolves the alarm, and every channel hears so
    await shared.register_agent("worker", kind="example", interval_s=3600)
    await shared.update_agent_heartbeat("worker", {"status": "running"})
    await runner.tick(shared)
    clock.now = (await shared.read())["stats"]["last_tick_at"]
    await sender.pass_once()
    clock.advance(DIGEST_S)
    assert (await sender.pass_once()).sent == 3
    resolved = [a for c in receivers["hook"].calls[1:] for a in c.json["alerts"]]
    assert [(a["event"], a["insight_id"]) for a in resolved] == [("resolved", dead[0])]
    assert "RESOLVED" in receivers["mail"].mails[1].message["Subject"]
    history = await store.history()
    assert [h["status"] for h in history] == ["sent"] * 6
    assert all(h["attempts"] == 1 for h in history)


async def test_a_burst_is_one_message_and_routing_follows_priority_and_type(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    await shared.update_config({"alerts": {"channels": {
        "chat": {"priorities": ["critical", "high", "low"], "types": ["disk_full", "quiet"]}}}})
    for i in range(7):
        await shared.add_insight("disk_full", {"summary": f"disk {i} full"}, "probe",
                                 priority="critical", dedupe_key=f"disk:{i}")
    await shared.add_insight("quiet", {"summary": "low one"}, "probe", priority="low")
    await shared.add_insight("note", {"summary": "medium one"}, "probe", priority="medium")
    await runner.tick(shared)
    state = await shared.read()
    clock = FakeClock(state["stats"]["last_tick_at"])
    sender = Sender(shared, store, clock=clock, env=channel_env(receivers), log=lambda _: None)
    await sender.pass_once()
    clock.advance(DIGEST_S)
    report = await sender.pass_once()
    assert report.messages == 3  # one per channel for the whole burst
    got = delivered_keys(receivers)
    assert len(got["hook"]) == len(got["mail"]) == 7  # critical only by default: no low, medium
    assert len(got["chat"]) == 8  # its own route: the seven and the low "quiet"
    assert len(receivers["hook"].calls) == len(receivers["mail"].mails) == 1
    assert receivers["hook"].calls[0].json["title"] == "[bga] 7 alerts: 7 firing"
    # every alert carries its own key, all distinct
    assert len(set(got["hook"] + got["chat"] + got["mail"])) == 22


async def test_retries_back_off_on_5xx_and_429_with_one_key(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    await shared.update_config({"alerts": {"digest_s": 0, "channels": {
        "chat": {"enabled": False}, "mail": {"enabled": False}}}})
    receivers["hook"].script = [(503, {}, "busy"), (429, {"Retry-After": "120"}, "slow down")]
    await shared.add_insight("disk_full", {"summary": "disk full"}, "probe", priority="high")
    await runner.tick(shared)
    clock = FakeClock((await shared.read())["stats"]["last_tick_at"])
    lines: list[str] = []
    sender = Sender(shared, store, clock=clock, env=channel_env(receivers), log=lines.append)
    assert (await sender.pass_once()).failed == 1  # 503
    clock.advance(4.9)
    await sender.pass_once()
    assert len(receivers["hook"].calls) == 1  # retry_base_s is 5 s
    clock.advance(0.1)
    assert (await sender.pass_once()).failed == 1  # 429, Retry-After: 120
    clock.advance(119)
    await sender.pass_once()
    assert len(receivers["hook"].calls) == 2
    clock.advance(1)
    assert (await sender.pass_once()).sent == 1
    calls = receivers["hook"].calls
    assert len(calls) == 3 and len({c.key for c in calls}) == 1
    assert all(c.verified for c in calls)
    assert "HTTP 503 (server error)" in lines[0] and "retrying in 5 s" in lines[0]
    assert "HTTP 429 (rate limited)" in lines[1] and "retrying in 120 s" in lines[1]
    (msg,) = await store.history()
    assert (msg["status"], msg["attempts"]) == ("sent", 3)


async def test_a_channel_that_keeps_failing_becomes_an_insight_and_recovers(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    await shared.update_config({"alerts": {"digest_s": 0, "failing_after": 2,
                                           "channels": {"mail": {"enabled": False}}}})
    env = channel_env(receivers)
    env["BGA_ALERT_CHAT_URL"] = f"http://127.0.0.1:{free_port()}/services/{SLACK_TOKEN}"
    await shared.add_insight("disk_full", {"summary": "disk full"}, "probe", priority="high")
    await runner.tick(shared)
    clock = FakeClock((await shared.read())["stats"]["last_tick_at"])
    lines: list[str] = []
    sender = Sender(shared, store, clock=clock, env=env, log=lines.append)
    report = await sender.pass_once()
    assert (report.sent, report.failed) == (1, 1)  # the webhook is not held up by the other
    clock.advance(5)
    await sender.pass_once()
    state = await shared.read()
    failing = [r for r in state["insights"].values()
               if r["body"]["insight_type"] == "alert_channel_failing"]
    assert len(failing) == 1 and failing[0]["body"]["priority"] == "high"
    assert failing[0]["body"]["content"]["channel"] == "chat"
    patterns = await shared.get_error_patterns(min_frequency=2, time_window_hours=1)
    assert any(p["error_type"] == "AlertDeliveryFailed" for p in patterns)
    assert all(SLACK_TOKEN not in line for line in lines)
    # the next tick routes it like any insight: to the webhook, never to the failing channel
    await runner.tick(shared)
    clock.now = (await shared.read())["stats"]["last_tick_at"]
    await sender.pass_once()
    about = [a["insight_type"] for c in receivers["hook"].calls for a in c.json["alerts"]]
    assert about == ["disk_full", "alert_channel_failing"]
    # the receiver comes back: the queued message goes out, the insight resolves
    env["BGA_ALERT_CHAT_URL"] = receivers["chat"].url(f"/services/{SLACK_TOKEN}")
    clock.advance(600)
    assert (await sender.pass_once()).sent >= 1
    state = await shared.read()
    iid = next(i for i, r in state["insights"].items()
               if r["body"]["insight_type"] == "alert_channel_failing")
    assert state["insights"][iid]["status"]["s"] == "resolved"


async def test_scheduler_down_is_alerted_by_the_sender_and_resolved(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    await shared.update_config({"alerts": {"digest_s": 0},
                                "liveness": {"scheduler_down_min_s": 30.0}})
    await runner.tick(shared)
    last_tick = (await shared.read())["stats"]["last_tick_at"]
    clock = FakeClock(last_tick + 20)
    sender = Sender(shared, store, clock=clock, env=channel_env(receivers), log=lambda _: None)
    assert (await sender.pass_once()).relayed == 0  # not down yet (30 s at least)
    clock.now = last_tick + 31
    await sender.pass_once()
    assert (await sender.pass_once()).sent == 0  # already sent in the pass before
    got = receivers["hook"].calls
    assert [a["insight_type"] for c in got for a in c.json["alerts"]] == ["scheduler_down"]
    assert len(receivers["mail"].mails) == len(receivers["chat"].calls) == 1
    state = await shared.read()
    down = [r for r in state["insights"].values()
            if r["body"]["insight_type"] == "scheduler_down"]
    assert len(down) == 1 and down[0]["body"]["priority"] == "critical"
    await runner.tick(shared)  # the scheduler is back; the tick itself does not re-alert it
    assert not [e for e in outbox_entries(await shared.read())
                if e["insight_type"] == "scheduler_down"]
    clock.now = (await shared.read())["stats"]["last_tick_at"] + 1
    await sender.pass_once()
    events = [(a["insight_type"], a["event"]) for c in got for a in c.json["alerts"]]
    assert events == [("scheduler_down", "firing"), ("scheduler_down", "resolved")]
    state = await shared.read()
    rec = next(r for r in state["insights"].values()
               if r["body"]["insight_type"] == "scheduler_down")
    assert rec["status"]["s"] == "resolved"


async def test_a_crash_between_tick_and_sender_loses_nothing(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any], db_url: str
        ) -> None:
    """The alerts are in the checkpoint: a sender that starts later (or twice) finds them,
    and copying them into the outbox twice counts once."""
    await shared.update_config({"alerts": {"digest_s": 0}})
    await shared.add_insight("disk_full", {"summary": "disk full"}, "probe", priority="high")
    await runner.tick(shared)
    now = (await shared.read())["stats"]["last_tick_at"]
    assert await store.enqueue(outbox_entries(await shared.read()), now) == 3
    assert await store.enqueue(outbox_entries(await shared.read()), now) == 0
    async with SharedState.open(db_url, producer="later") as later:  # its own connections
        sender = Sender(later, later.backend.outbox(), clock=FakeClock(now),
                        env=channel_env(receivers), log=lambda _: None)
        report = await sender.pass_once()
    assert (report.relayed, report.sent) == (0, 3)


async def test_bad_alert_config_is_refused_and_changes_nothing(shared: SharedState) -> None:
    before = await shared.export_state()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"alerts": {"channels": {"x": {"type": "pagerduty"}}}}, "type"),
        ({"alerts": {"channels": {"x": {"type": "slack", "priorities": ["urgent"]}}}},
         "priorities"),
        ({"alerts": {"channels": {"bad name": {"type": "slack"}}}}, "channels"),
        ({"alerts": {"digest_s": -1}}, "digest_s"),
        ({"alerts": {"channels": {"x": {"type": "webhook", "url": "http://evil"}}}}, "url"),
    ]
    for updates, field in cases:
        with pytest.raises(InvalidInput) as exc:
            await shared.update_config(updates)
        assert field in str(exc.value)
    after = await shared.export_state()
    assert after["channels"]["config"] == before["channels"]["config"]


async def test_missing_environment_names_the_variable(shared: SharedState,
                                                      store: OutboxStore) -> None:
    sender = Sender(shared, store, env={}, log=lambda _: None)
    with pytest.raises(InvalidInput, match="BGA_ALERT_HOOK_URL is not set"):
        await sender.test("hook")
    with pytest.raises(InvalidInput, match="no alert channel 'nope'"):
        await sender.test("nope")
    with pytest.raises(InvalidInput, match="BGA_ALERT_HOOK_SECRET"):
        alerts.target("hook", (await _config(shared)).channels["hook"],
                      {"BGA_ALERT_HOOK_URL": "http://127.0.0.1:1/"})


async def _config(shared: SharedState) -> Any:
    from state.queries import config_of

    return config_of(await shared.read()).alerts


async def test_secrets_never_reach_the_database_or_the_export(
        sqlite_url: str, receivers: dict[str, Any], tmp_path: Path) -> None:
    """The receiver echoes the URL in its error page; the error kept in the history, the log
    lines, the state and the database bytes never hold the Slack token, HMAC key or SMTP
    password."""
    async with SharedState.open(sqlite_url, producer="test") as shared:
        store = shared.backend.outbox()
        await shared.update_config({"agents": QUIET_AGENTS, "alerts": {
            "digest_s": 0, "channels": CHANNELS}})
        receivers["chat"].script = [(500, {}, f"no route for /services/{SLACK_TOKEN}")] * 3
        await shared.add_insight("disk_full", {"summary": "disk full"}, "probe",
                                 priority="high")
        await runner.tick(shared)
        lines: list[str] = []
        clock = FakeClock((await shared.read())["stats"]["last_tick_at"])
        sender = Sender(shared, store, clock=clock, env=channel_env(receivers),
                        log=lines.append)
        for _ in range(3):
            await sender.pass_once()
            clock.advance(3600)
        await sender.test("hook")
        history = await store.history()
        export = await shared.export_state()
        await runner.tick(shared)
    assert any("HTTP 500" in (h["last_error"] or "") for h in history)
    text = repr(history) + repr(export) + "\n".join(lines)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    for secret in (SLACK_TOKEN, SECRET, SMTP_PASSWORD):
        assert secret not in text
        assert secret.encode() not in raw


def test_bga_alerts_test_sends_and_lists_history(cli_db_url: str,
                                                 receivers: dict[str, Any]) -> None:
    import subprocess
    import sys

    async def setup() -> None:
        async with SharedState.open(cli_db_url, producer="test") as shared:
            await shared.update_config({"agents": QUIET_AGENTS,
                                        "alerts": {"channels": CHANNELS}})
            await runner.tick(shared)

    asyncio.run(setup())
    bga = [sys.executable, "-m", "graph.cli"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("BGA_ALERT_")}
    missing = subprocess.run([*bga, "alerts", "test", "hook", "--db", cli_db_url],
                             env=base, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2, missing.stderr
    assert "BGA_ALERT_HOOK_URL is not set" in missing.stderr
    env = {**base, **channel_env(receivers)}
    for name in ("hook", "chat", "mail"):
        done = subprocess.run([*bga, "alerts", "test", name, "--db", cli_db_url], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"test message delivered to {name}" in done.stdout
    assert receivers["hook"].calls[0].verified is True
    assert receivers["hook"].calls[0].json["alerts"][0]["event"] == "test"
    assert "TEST" in receivers["chat"].calls[0].json["text"]
    assert "TEST" in receivers["mail"].mails[0].message["Subject"]
    receivers["hook"].script = [(403, {}, "bad signature")]
    refused = subprocess.run([*bga, "alerts", "test", "hook", "--db", cli_db_url], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "HTTP 403 (refused)" in refused.stderr
    listed = subprocess.run([*bga, "alerts", "history", "--json", "--db", cli_db_url],
                            env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    import json

    rows = json.loads(listed.stdout)
    assert sorted((r["channel"], r["status"]) for r in rows) == [
        ("chat", "sent"), ("hook", "dropped"), ("hook", "sent"), ("mail", "sent")]


def test_dashboard_shows_the_delivery_history(cli_db_url: str, receivers: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboard import data

    async def deliver() -> None:
        async with SharedState.open(cli_db_url, producer="test") as shared:
            store = shared.backend.outbox()
            await shared.update_config({"agents": QUIET_AGENTS, "alerts": {
                "digest_s": 0, "channels": CHANNELS}})
            receivers["chat"].script = [(500, {}, f"no route for /services/{SLACK_TOKEN}")]
            for i in range(4):
                await shared.add_insight("disk_full", {"summary": f"disk {i} full"}, "probe",
                                         priority="critical", dedupe_key=f"d{i}")
            await runner.tick(shared)
            clock = FakeClock((await shared.read())["stats"]["last_tick_at"])
            await Sender(shared, store, clock=clock, env=channel_env(receivers),
                         log=lambda _: None).pass_once()

    asyncio.run(deliver())
    monkeypatch.setenv("BGA_DATABASE_URL", cli_db_url)
    data.refresh()
    app = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60)
    at.run()
    at.switch_page("views/alerts.py").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = {m.label: m.value for m in at.metric}
    assert (shown["Sent"], shown["Retrying"], shown["Waiting (digest window)"]) == \
        ("2", "1", "0")
    channels, history = (df.value for df in at.dataframe)
    assert sorted(channels["channel"]) == ["chat", "hook", "mail"]
    rows = {r["channel"]: r for r in history.to_dict("records")}
    assert rows["hook"]["status"] == "sent" and rows["hook"]["alerts"] == 4
    assert rows["chat"]["status"] == "retrying" and rows["chat"]["tries"] == 1
    assert "HTTP 500" in rows["chat"]["last error"]
    assert "(+1)" in rows["mail"]["what"]
    page = repr([df.value.to_dict() for df in at.dataframe]) + repr(at.main)
    assert SLACK_TOKEN not in page and SECRET not in page


async def test_hostile_insight_text_cannot_inject_headers_or_ping(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    await shared.update_config({"alerts": {"digest_s": 0}})
    hostile = ("disk full\r\nBcc: victim@example.com\r\n\r\n<!channel> <https://evil.example|"
               "click> & more " + "x" * 2000)
    await shared.add_insight("disk_full", {"summary": hostile}, "probe", priority="critical")
    await runner.tick(shared)
    clock = FakeClock((await shared.read())["stats"]["last_tick_at"])
    report = await Sender(shared, store, clock=clock, env=channel_env(receivers),
                          log=lambda _: None).pass_once()
    assert (report.sent, report.failed) == (3, 0)
    mail = receivers["mail"].mails[0]
    assert mail.envelope_to == ["oncall@example.com", "ops@example.com"]  # no Bcc added
    assert sorted(mail.message.keys()) == sorted([  # the line breaks added no header
        "Subject", "From", "To", "Date", "Message-ID", "X-BGA-Idempotency-Key",
        "Content-Type", "Content-Transfer-Encoding", "MIME-Version"])
    text = receivers["chat"].calls[0].json["text"]
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text and "<https://" not in text
    alert = receivers["hook"].calls[0].json["alerts"][0]
    assert len(alert["summary"]) == 500 and alert["content"]["summary"].startswith("disk full")


async def test_a_receiver_that_hangs_times_out_and_is_retried(
        shared: SharedState, store: OutboxStore, receivers: dict[str, Any]) -> None:
    import threading

    await shared.update_config({"alerts": {"digest_s": 0, "timeout_s": 0.5, "channels": {
        "chat": {"enabled": False}, "mail": {"enabled": False}}}})
    await shared.add_insight("disk_full", {"summary": "disk full"}, "probe", priority="high")
    await runner.tick(shared)
    clock = FakeClock((await shared.read())["stats"]["last_tick_at"])
    lines: list[str] = []
    sender = Sender(shared, store, clock=clock, env=channel_env(receivers), log=lines.append)
    receivers["hook"].hold = threading.Event()  # answers only when released
    try:
        assert (await sender.pass_once()).failed == 1
    finally:
        receivers["hook"].hold.set()
        receivers["hook"].hold = None
    assert "timed out" in lines[0] and "retrying in 5 s" in lines[0]
    clock.advance(5)
    assert (await sender.pass_once()).sent == 1
    assert len({c.key for c in receivers["hook"].calls}) == 1


@pytest.mark.postgres
async def test_the_sender_rides_out_a_lost_database_session(
        postgres_url: str, receivers: dict[str, Any]) -> None:
    """The server ends every session of the sender's database (the outbox shares the
    backend's pool) mid-run: one line saying so per dead session, a short wait, new sessions,
    and the alert still goes out once."""
    import uuid

    import psycopg

    from state.backends.postgres import POOL_MAX

    app = f"bga_outbox_{uuid.uuid4().hex[:12]}"
    async with SharedState.open(f"{postgres_url}&application_name={app}",
                                producer="test") as shared:
        store = shared.backend.outbox()
        await shared.update_config({"agents": QUIET_AGENTS, "liveness": NO_SCHEDULER_DOWN,
                                    "alerts": {"digest_s": 0, "channels": CHANNELS}})
        await shared.add_insight("disk_full", {"summary": "disk full"}, "probe",
                                 priority="high")
        await runner.tick(shared)
        await store.counts()  # the store has its sessions now
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute(  # and wait (up to 10 s each) until they have ended
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM "
                "pg_stat_activity WHERE application_name = %s", (app,)).fetchone()
        assert ended is not None and ended[0] >= 1
        lines: list[str] = []
        passes = await alerts.run(shared, store, stop=asyncio.Event(), interval_s=0.01,
                                  log=lines.append, env=channel_env(receivers),
                                  max_passes=2)
    assert passes == 2
    failed = [line for line in lines if line.startswith("alert pass failed")]
    assert 1 <= len(failed) <= POOL_MAX and "retrying in 0.5 s" in failed[0], lines
    assert all("connection to the server lost" in line or "server shut the connection down"
               in line for line in failed), failed
    assert len(receivers["hook"].calls) == len(receivers["mail"].mails) == 1


def test_bga_run_delivers_alerts_itself(cli_db_url: str, receivers: dict[str, Any]) -> None:
    """`bga run` runs the sender too (one per database): a high insight reaches the webhook
    with no `bga alerts run` beside it; SIGTERM stops both cleanly."""
    import signal
    import subprocess
    import sys
    import time

    async def setup() -> None:
        async with SharedState.open(cli_db_url, producer="test") as shared:
            await shared.update_config({"agents": QUIET_AGENTS, "alerts": {
                "digest_s": 0.0, "channels": {"hook": {"type": "webhook"}}}})
            await shared.add_insight("error_rate_spike", {"summary": "billing: 12 errors"},
                                     "billing", priority="high")

    asyncio.run(setup())
    base = {k: v for k, v in os.environ.items() if not k.startswith("BGA_ALERT_")}
    env = {**base, **channel_env(receivers)}
    proc = subprocess.Popen([sys.executable, "-m", "graph.cli", "run", "--db", cli_db_url,
                             "--interval", "0.5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120  # an upper bound on a loaded machine, not a timing
        while not receivers["hook"].calls and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    calls = receivers["hook"].calls
    assert calls and calls[0].verified is True, out
    alerts = [a for c in calls for a in c.json["alerts"]]
    assert [(a["event"], a["insight_type"]) for a in alerts] == [
        ("firing", "error_rate_spike")], alerts
    assert "scheduler stopped cleanly" in out
