"""SIGKILL the alert sender (``bga alerts run``, a real process) while its messages are in
flight to a signed webhook, a Slack-format webhook and an SMTP server, round after round:
every alert the ticks raised is delivered at least once, with the same idempotency key, none
is lost; duplicates are counted."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph import runner
from nodes.notify import outbox_entries
from state import SharedState
from tests.integration.alert_receivers import running_receivers, wait_for
from tests.integration.test_alerts import (
    CHANNELS,
    NO_SCHEDULER_DOWN,
    QUIET_AGENTS,
    SECRET,
    channel_env,
    delivered_keys,
)

pytestmark = pytest.mark.slow
ROUNDS = 2  # the second round runs where deliveries were already made and killed
REDIS_ROUNDS = 1  # one round is enough to show a killed Redis store loses and adds nothing
PER_ROUND = 4


@pytest.fixture
def receivers() -> Iterator[dict[str, Any]]:
    with running_receivers(SECRET) as running:
        yield running


def start_sender(url: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``bga alerts run`` in its own process; what it says goes to ``log`` (a file, so a
    chatty sender never blocks on a full pipe)."""
    with log.open("a") as out:
        return subprocess.Popen([sys.executable, "-m", "graph.cli", "alerts", "run",
                                 "--interval", "0.05", "--db", url], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def all_sent(url: str, raised: set[str]) -> bool:
    """The outbox says every raised alert is in a message its receiver answered."""

    async def check() -> bool:
        async with SharedState.open(url, producer="test", read_only=True) as shared:
            store = shared.backend.outbox()
            counts = await store.counts()
            sent = {a["key"] for m in await store.history(10_000) if m["status"] == "sent"
                    for a in m["events"]}
        return counts["waiting"] == 0 and counts.get("pending", 0) == 0 and raised <= sent

    return asyncio.run(check())


def test_sigkill_mid_delivery_loses_no_alert(shared_db_url: str, receivers: dict[str, Any],
                                             tmp_path: Path) -> None:
    url = shared_db_url
    log = tmp_path / "sender.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BGA_ALERT_")},
           **channel_env(receivers)}
    raised: set[str] = set()

    async def raise_alerts(round_no: int) -> set[str]:
        async with SharedState.open(url, producer="test") as shared:
            if round_no == 0:
                await shared.update_config({
                    "agents": QUIET_AGENTS, "liveness": NO_SCHEDULER_DOWN,
                    "alerts": {"digest_s": 0, "retry_base_s": 0.2, "timeout_s": 30,
                               "channels": CHANNELS}})
            for i in range(PER_ROUND):
                await shared.add_insight("disk_full", {"summary": f"disk {round_no}.{i} full"},
                                         "probe", priority="critical",
                                         dedupe_key=f"disk:{round_no}:{i}")
            await runner.tick(shared)
            return {e["key"] for e in outbox_entries(await shared.read())}

    def all_arrived() -> bool:
        return all(r.arrived.is_set() for r in receivers.values())

    kills = 0
    for round_no in range(REDIS_ROUNDS if url.startswith("redis") else ROUNDS):
        raised |= asyncio.run(raise_alerts(round_no))
        for r in receivers.values():  # each receiver holds the next delivery open
            r.arrived.clear()
            r.hold = threading.Event()
        sender = start_sender(url, env, log)
        try:
            wait_for(all_arrived, what="a delivery in flight on every channel")
            sender.send_signal(signal.SIGKILL)  # mid-delivery: no receiver has answered
            sender.wait(timeout=120)
            kills += 1
        finally:
            if sender.poll() is None:
                sender.kill()
        for r in receivers.values():
            assert r.hold is not None
            r.hold.set()  # the answers go to a dead process
            r.hold = None
        sender = start_sender(url, env, log)
        try:
            wait_for(functools.partial(all_sent, url, set(raised)),
                     what="every raised alert sent")
        finally:
            sender.send_signal(signal.SIGTERM)
            try:
                sender.wait(timeout=120)
            finally:
                if sender.poll() is None:
                    sender.kill()
        assert sender.returncode == 0, log.read_text()

    got = delivered_keys(receivers)
    deliveries = Counter(k for keys in got.values() for k in keys)
    assert set(deliveries) == raised  # every alert delivered, nothing that was not raised
    duplicated = sum(n - 1 for n in deliveries.values())
    # a resent message is recognisably the same: same message key, same alerts in it
    hook_messages: dict[str, list[str]] = {}
    for call in receivers["hook"].calls:
        members = [a["idempotency_key"] for a in call.json["alerts"]]
        assert hook_messages.setdefault(call.key, members) == members
        assert call.verified is True
    assert len(receivers["hook"].calls) > len(hook_messages)  # the killed tries were resent
    mail_ids = Counter(m.key for m in receivers["mail"].mails)
    assert max(mail_ids.values()) >= 2 and all(
        m.message["Message-ID"] == f"<{m.key}@background-agents>" for m in receivers["mail"].mails)
    print(f"\nalerts raised {len(raised)} / delivered {len(deliveries)} (unique keys) / "
          f"duplicated {duplicated} after {kills} SIGKILLs mid-delivery "
          f"({sum(deliveries.values())} deliveries)")
