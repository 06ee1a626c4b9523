"""Percentiles through the whole path on every backend (``db_url``: sqlite, memory, postgres):
written with ``add_performance_metric``, read before and after folding, at every tier the
summary picks (1 h window -> 1 m buckets, 24 h -> 1 h, 30 days -> 1 d), against the exact
nearest-rank values. Also: a state whose sketches are in the older dense format (as an old
checkpoint holds them) reads the same numbers and merges new writes into the sparse format.
"""

from __future__ import annotations

import math
import random
import time
from fractions import Fraction

import pytest
from langgraph.types import Overwrite

from state import SharedState, queries, sketch
from state.folder import FOLD_NODE

HOUR = 3600.0
WINDOWS = ((1, "1m"), (24, "1h"), (24 * 30, "1d"))


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(Fraction(q) * len(ordered))) - 1]


def timeout_case() -> list[float]:
    """999 latencies of about 50 ms (40..60) and one 60 s timeout: exact p50/p95/p99 50/59/60."""
    rnd = random.Random(5)
    values = [40 + 20 * i / 998 for i in range(999)] + [60_000.0]
    rnd.shuffle(values)
    return values


def assert_within(summary: dict, series: str, values: list[float]) -> None:
    s = summary["series"][series]
    assert s["count"] == len(values)
    assert (s["min"], s["max"]) == (min(values), max(values))
    for q, key in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        want = exact(values, q)
        assert abs(s[key] - want) <= 0.02 * abs(want) * (1 + 1e-9), (key, s[key], want)


def to_legacy(agg: list) -> list:
    """A sparse aggregate in the dense format checkpoints held before (no collapse needed)."""
    pos, neg = sketch.bins(agg)

    def dense(side: list[tuple[int, int]]) -> tuple[int, list[int]]:
        if not side:
            return 0, []
        counts = dict(side)
        return side[0][0], [counts.get(k, 0) for k in range(side[0][0], side[-1][0] + 1)]

    return [*agg[:5], *dense(pos), *dense(neg)]


async def test_timeout_case_at_every_tier(db_url: str) -> None:
    values = timeout_case()
    now = time.time()
    async with SharedState.open(db_url, producer="pct") as shared:
        for i, v in enumerate(values):  # spread over the last 50 minutes, ~6 buckets of 1 m
            await shared.add_performance_metric(
                {"source_agent": "api", "name": "latency_ms", "value": v, "unit": "ms",
                 "timestamp": now - 60 - (i % 50) * 60})
        for folded in (False, True):
            if folded:
                await shared.flush()
            for hours, tier in WINDOWS:
                summary = await shared.get_performance_summary(hours=hours)
                assert summary["tier"] == tier
                assert_within(summary, "api/latency_ms", values)
                s = summary["series"]["api/latency_ms"]
                for key, want in (("p50", 50), ("p95", 59), ("p99", 60)):  # issue 11
                    assert abs(s[key] - want) <= 0.02 * want, (hours, key, s[key])


async def test_wide_signed_data_with_zeros_at_every_tier(db_url: str) -> None:
    """Log-uniform over 1e-3..1e6 (9 decades), a few negatives and zeros, spread over 20 days."""
    rnd = random.Random(9)
    values = [10 ** rnd.uniform(-3, 6) for _ in range(3000)]
    values += [-(10 ** rnd.uniform(-3, 3)) for _ in range(100)] + [0.0] * 100
    now = time.time()
    async with SharedState.open(db_url, producer="pct") as shared:
        stamps = [now - 30 - (i % 40) * 10 if i % 4 else now - 2 * HOUR - rnd.random() * 19 * 86400
                  for i in range(len(values))]  # 3 in 4 in the last 7 minutes
        await shared.add_performance_metrics(
            {"source_agent": "a", "name": "wide", "value": v, "timestamp": t}
            for v, t in zip(values, stamps, strict=True))
        await shared.flush()
        recent = [v for i, v in enumerate(values) if i % 4]
        assert_within(await shared.get_performance_summary(hours=1), "a/wide", recent)
        month = await shared.get_performance_summary(hours=24 * 30)
        assert month["tier"] == "1d"
        assert_within(month, "a/wide", values)


async def test_sketches_in_the_old_dense_format_still_read_and_merge(db_url: str) -> None:
    values = timeout_case()
    now = time.time()
    async with SharedState.open(db_url, producer="pct") as shared:
        await shared.add_performance_metrics(
            {"source_agent": "api", "name": "latency_ms", "value": v, "timestamp": now - 90}
            for v in values)
        await shared.flush()
        before = {h: await shared.get_performance_summary(hours=h) for h, _ in WINDOWS}
        # Rewrite the metrics channel as a checkpoint of the older version held it.
        state = await shared.read()
        legacy = {s: {**d, "tiers": {t: {b: to_legacy(a) for b, a in buckets.items()}
                                     for t, buckets in d["tiers"].items()}}
                  for s, d in state["metrics"].items()}
        await shared._graph.aupdate_state(shared.config, {"metrics": Overwrite(legacy)},
                                          as_node=FOLD_NODE)
        stored = (await shared.read())["metrics"]["api/latency_ms"]["tiers"]
        assert all(len(a) == 9 for buckets in stored.values() for a in buckets.values())
        for h, _ in WINDOWS:
            assert await shared.get_performance_summary(hours=h) == before[h]
        # New writes merge into the old buckets; the merged buckets are in the sparse format.
        more = [55.0] * 500
        await shared.add_performance_metrics(
            {"source_agent": "api", "name": "latency_ms", "value": v, "timestamp": now - 90}
            for v in more)
        await shared.flush()
        stored = (await shared.read())["metrics"]["api/latency_ms"]["tiers"]
        assert all(len(a) == 7 for buckets in stored.values() for a in buckets.values())
        for h, _ in WINDOWS:
            assert_within(await shared.get_performance_summary(hours=h), "api/latency_ms",
                          values + more)
        # An export of the old state restores (its sketches validated and migrated).
        doc = queries.export_document({**state, "metrics": legacy})
    async with SharedState.open(db_url, producer="pct2") as other:
        await other.restore_state(doc, force=True)
        assert_within(await other.get_performance_summary(hours=1), "api/latency_ms", values)
        stored = (await other.read())["metrics"]["api/latency_ms"]["tiers"]
        assert all(len(a) == 7 for buckets in stored.values() for a in buckets.values())


async def test_restore_rejects_a_malformed_sketch(db_url: str) -> None:
    async with SharedState.open(db_url, producer="pct") as shared:
        await shared.add_performance_metric({"source_agent": "a", "name": "m", "value": 1.0})
        await shared.flush()
        doc = await shared.export_state()
        good = await shared.get_performance_summary(hours=1)
        buckets = doc["channels"]["metrics"]["a/m"]["tiers"]["1m"]
        key = next(iter(buckets))
        buckets[key] = [5, 1.0, 1.0, 1.0, 0, [0, 0], []]  # count 5, one value in the bins
        with pytest.raises(ValueError, match=r"'a/m' tier 1m bucket .*do not add up"):
            await shared.restore_state(doc, force=True)
        assert await shared.get_performance_summary(hours=1) == good
