"""Sample activity for a first run: two agents, an hour of metrics and errors, with two
simulated faults the insight rules find on the first tick.

Written through the public SharedState API, exactly as an outside service would. The demo
writes no insight itself: every insight comes from the coordinator's rules, so what the
dashboard lists after a demo is what the rules make of the faults below.

The simulated faults (``FAULTS``):

- ``checkout_api/batch_latency_ms`` is 1.8x slower in the last ten minutes of the sample hour
  (a latency regression);
- ``checkout_api`` rejects rows for invalid e-mails, and ``billing_worker`` sees payment
  gateway timeouts (error patterns, new and then recurring).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from pathlib import Path

from nodes.profile_import.store import default_inbox
from state import events
from state.api import SharedState
from state.models import OptimizationRecord, PerformanceMetric

SAMPLE_PROFILES = Path(__file__).resolve().parent.parent / "samples" / "profiles"


def copy_sample_imports(database_url: str) -> list[Path]:
    """Drop the sample profile files into the importer's inbox, as a user would.

    ``copy2`` keeps the files' old modification times, so the agent takes them at once
    instead of waiting for them to settle. Files already there are left alone.
    """
    inbox = default_inbox(database_url)
    if inbox is None or not SAMPLE_PROFILES.is_dir():
        return []
    inbox.mkdir(parents=True, exist_ok=True)
    copied = []
    for src in sorted(SAMPLE_PROFILES.glob("[0-9]*")):
        dst = inbox / src.name
        if not dst.exists():
            shutil.copy2(src, dst)
            copied.append(dst)
    return copied


SEEDED = "demo_seeded_at"  # system key: when the sample hour was written into this database


async def seed_sample_data(shared: SharedState, *, seed: int = 7) -> int:
    """Write a realistic hour of activity, once per database; returns how many events were
    written (0 when this database already has them: re-running `make run` only continues the
    live traffic). The hour and its marker (system key ``demo_seeded_at``) are one
    transaction, so an interrupted first run leaves neither."""
    copy_sample_imports(shared.backend.url)  # the profile_import agent imports them (once)
    if SEEDED in ((await shared.read()).get("system") or {}):
        return 0
    rng = random.Random(seed)
    now = time.time()
    batch: list[events.Event] = [
        events.registration("checkout_api", "service", 30, None, {}, now=now),
        events.registration("billing_worker", "worker", 60, None, {}, now=now),
    ]
    for minute in range(60):
        ts = now - (60 - minute) * 60 + rng.uniform(0, 59)
        slow = 1.8 if minute >= 50 else 1.0  # a latency regression in the last ten minutes
        for _ in range(20):
            batch.append(events.metric(PerformanceMetric(
                source_agent="checkout_api", name="batch_latency_ms", unit="ms",
                value=rng.lognormvariate(3.0, 0.35) * slow, timestamp=ts)))
        batch.append(events.metric(PerformanceMetric(
            source_agent="checkout_api", name="requests_per_s",
            value=rng.gauss(24_000, 1_500), timestamp=ts)))
        batch.append(events.metric(PerformanceMetric(
            source_agent="billing_worker", name="run_latency_ms", unit="ms",
            value=rng.lognormvariate(6.0, 0.6), timestamp=ts)))
    for i in range(12):
        batch.append(events.error("ValueError", f"invalid email 'user{i}@' on line {i * 7}",
                                  "checkout_api", now=now))
    for i in range(3):
        batch.append(events.error("TimeoutError", f"payment gateway timed out after {i + 5} s",
                                  "billing_worker", now=now))
    batch.append(events.optimization(OptimizationRecord(
        record_id="opt_demo_checkout_batch_size",
        optimization_type="batch_size", target="checkout_api", before={"batch_size": 500},
        after={"batch_size": 1000}, outcome="kept", success=True,
        details={"requests_per_s_before": 21_500, "requests_per_s_after": 24_100}), now=now))
    for agent in ("checkout_api", "billing_worker"):
        batch.append(events.heartbeat(agent, {"status": "running"}, now=now))
    batch.append(events.system_update({"mode": "demo", SEEDED: now}, now=now))
    await shared.write_events(batch)
    return len(batch)


async def sample_traffic(shared: SharedState, stop: asyncio.Event, *, every_s: float = 2.0) -> int:
    """Keep writing live activity (as an outside service would) until ``stop`` is set."""
    rng = random.Random()
    sent = 0
    while not stop.is_set():
        batch = [PerformanceMetric(source_agent="checkout_api", name="batch_latency_ms",
                                   unit="ms", value=rng.lognormvariate(3.0, 0.35))
                 for _ in range(20)]
        batch.append(PerformanceMetric(source_agent="checkout_api", name="requests_per_s",
                                       value=rng.gauss(24_000, 1_500)))
        sent += await shared.add_performance_metrics(batch)
        for agent in ("checkout_api", "billing_worker"):
            await shared.update_agent_heartbeat(agent, {"status": "running"})
        if rng.random() < 0.2:
            await shared.add_error_pattern(
                "ValueError", f"invalid email 'user{rng.randint(1, 999)}@'", "checkout_api")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
    return sent
