"""``state.compact``: bounding the growing channels.

Checked: compaction is idempotent for a given clock; it keeps only the configured number of
buckets per tier; for the time-horizon part it commutes with merging (so compacting each
write, as the fold does, loses nothing a later compaction would keep); caps keep exactly the
newest N; and a checkpoint's size depends on the distinct buckets, not on the event count.
"""

from __future__ import annotations

from typing import Any

import orjson
import ormsgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from state.compact import compact
from state.config import RetentionConfig
from state.fingerprint import FINGERPRINT_VERSION
from state.fold import InboxRow, fold_rows
from state.schema import REDUCERS, TIERS, apply_update

SETTINGS = settings(max_examples=120, deadline=None)
DAY = 86400
BASE_TS = 1_700_000_000
SERIES = [f"agent{i % 3}/metric{i}" for i in range(12)]
UNIT = {s: ("ms" if i % 2 else None) for i, s in enumerate(SERIES)}  # one unit per series
PATTERNS = [(f"Error{i % 4}", f"message {i}") for i in range(10)]
INSIGHTS = [f"ins_{i}" for i in range(10)]
RECORDS = [f"opt-{i}" for i in range(10)]
GROWING = ("metrics", "error_patterns", "insights", "optimizations")

now_strategy = st.integers(BASE_TS + 5 * DAY, BASE_TS + 6 * DAY)
# Event age in seconds before "now": mostly recent, some days old.
age = st.one_of(st.integers(0, 3600), st.integers(0, 5 * DAY), st.floats(0, 600))


def retention_strategy(capped: bool) -> st.SearchStrategy[RetentionConfig]:
    cap = st.integers(1, 5) if capped else st.just(100_000)
    return st.builds(
        RetentionConfig, minute_buckets=st.integers(1, 90), hour_buckets=st.integers(1, 30),
        day_buckets=st.integers(1, 4), max_series=cap, max_error_patterns=cap,
        max_insights=cap, max_optimizations=cap,
    )


@st.composite
def event(draw, now: int) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["metric", "metric", "error", "error", "insight", "ack", "opt"]))
    t = now - draw(age)
    if kind == "metric":
        s = draw(st.sampled_from(SERIES))
        p = {"s": s, "v": draw(st.floats(-1e3, 1e3, allow_nan=False)), "t": t}
        if UNIT[s]:
            p["u"] = UNIT[s]
    elif kind == "error":
        etype, norm = draw(st.sampled_from(PATTERNS))
        p = {"id": f"{etype}|{norm}", "type": etype, "norm": norm, "msg": norm,
             "fp": FINGERPRINT_VERSION,
             "a": draw(st.sampled_from(["a1", "a2", "a3"])), "t": t}
    elif kind == "insight":
        p = {"id": draw(st.sampled_from(INSIGHTS)), "type": "anomaly", "a": "a1",
             "p": draw(st.sampled_from(["low", "high"])), "c": {}, "t": t}
    elif kind == "ack":
        p = {"id": draw(st.sampled_from(INSIGHTS)), "t": t}
    else:
        p = {"record_id": draw(st.sampled_from(RECORDS)), "optimization_type": "cache",
             "target": "agent0", "success": True, "t": t}
    return kind, p


def fold_events(events: list[tuple[str, dict]], stream: int) -> dict[str, Any]:
    rows = [InboxRow(stream, i + 1, kind, orjson.dumps(p)) for i, (kind, p) in enumerate(events)]
    result = fold_rows(rows)
    assert not result.quarantined, result.quarantined
    return {ch: result.delta.get(ch) or {} for ch in GROWING}


@st.composite
def scenario(draw, capped: bool, parts: int = 1):
    """(now, retention, [state, ...]): states folded from events up to ``now``."""
    now = draw(now_strategy)
    retention = draw(retention_strategy(capped))
    states = [fold_events(draw(st.lists(event(now), min_size=3, max_size=40)), stream=i + 1)
              for i in range(parts)]
    return now, retention, states


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return apply_update(a, b)


def merge_all(states: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in states:
        out = {ch: REDUCERS[ch](out.get(ch), s.get(ch)) for ch in GROWING}
    return out


def keep_counts(r: RetentionConfig) -> dict[str, int]:
    return {"1m": r.minute_buckets, "1h": r.hour_buckets, "1d": r.day_buckets}


def oldest_kept(now: int, r: RetentionConfig) -> dict[str, int]:
    """Start of the oldest bucket retention covers, computed independently of the module."""
    keep = keep_counts(r)
    return {name: (now // width - keep[name] + 1) * width for name, width in TIERS}


# --- idempotence and bounds -----------------------------------------------------------------------


@SETTINGS
@given(scenario(capped=True))
def test_compact_is_idempotent(sc):
    now, retention, (state,) = sc
    once = compact(state, now, retention)
    assert compact(once, now, retention) == once
    assert set(once) == set(GROWING)


@SETTINGS
@given(scenario(capped=False))
def test_compact_keeps_only_covered_buckets_and_leaves_them_unchanged(sc):
    now, retention, (state,) = sc
    out = compact(state, now, retention)
    keep, cut = keep_counts(retention), oldest_kept(now, retention)
    for ch in ("metrics", "error_patterns"):
        for key, rec in state[ch].items():
            kept = {name: {b: v for b, v in buckets.items() if b >= cut[name]}
                    for name, buckets in rec["tiers"].items()}
            if not any(kept.values()):
                assert key not in out[ch]  # nothing left in retention: dropped
                continue
            assert out[ch][key]["tiers"] == kept
            for name, buckets in out[ch][key]["tiers"].items():
                assert len(buckets) <= keep[name]  # bounded by configuration
            others = {k: v for k, v in out[ch][key].items() if k != "tiers"}
            assert others == {k: v for k, v in rec.items() if k != "tiers"}
        assert set(out[ch]) <= set(state[ch])
    # Without caps, insights and optimizations lose only expired bare acknowledgements.
    assert out["optimizations"] == state["optimizations"]
    for iid, rec in state["insights"].items():
        expired = rec.get("body") is None and rec["status"]["at"] < cut["1d"]
        assert (iid not in out["insights"]) == expired


def test_compact_only_touches_growing_channels_present():
    r = RetentionConfig()
    assert compact({}, BASE_TS, r) == {}
    assert compact({"metrics": None, "stats": {"folds": 1}}, BASE_TS, r) == {"metrics": {}}


# --- compaction commutes with merging (time-horizon part) -----------------------------------------


@SETTINGS
@given(scenario(capped=False, parts=2))
def test_compact_commutes_with_merge_for_metrics(sc):
    now, retention, (a, b) = sc
    direct = compact(merge(a, b), now, retention)
    stepwise = compact(merge(compact(a, now, retention), compact(b, now, retention)), now,
                       retention)
    assert stepwise["metrics"] == direct["metrics"]


@SETTINGS
@given(scenario(capped=False, parts=2))
def test_compact_commutes_with_merge_for_error_patterns(sc):
    """Bucketed counts always agree. The lifetime fields (count, first/last seen, sample,
    sources) agree too unless a pattern expired completely on one side only: then the
    stepwise result has forgotten that side's history, by design of retention."""
    now, retention, (a, b) = sc
    ca, cb = compact(a, now, retention), compact(b, now, retention)
    direct = compact(merge(a, b), now, retention)["error_patterns"]
    stepwise = compact(merge(ca, cb), now, retention)["error_patterns"]
    assert stepwise.keys() == direct.keys()
    for pid, pat in direct.items():
        assert stepwise[pid]["tiers"] == pat["tiers"]
        one_sided_expiry = (pid in a["error_patterns"] and pid in b["error_patterns"]
                            and (pid in ca["error_patterns"]) != (pid in cb["error_patterns"]))
        if not one_sided_expiry:
            assert stepwise[pid] == pat


@SETTINGS
@given(scenario(capped=False, parts=3))
def test_compacting_every_write_equals_compacting_once(sc):
    """What the fold does (compact after each merged batch) keeps the same buckets as merging
    everything first."""
    now, retention, states = sc
    once = compact(merge_all(states), now, retention)
    step: dict[str, Any] = {}
    for s in states:
        step = compact(merge(step, s), now, retention)
    assert step["metrics"] == once["metrics"]
    assert {k: v["tiers"] for k, v in step["error_patterns"].items()} == {
        k: v["tiers"] for k, v in once["error_patterns"].items()}


# --- caps -----------------------------------------------------------------------------------------


def _assert_newest(kept: dict, candidates: dict, limit: int, rank) -> None:
    assert len(kept) == min(limit, len(candidates))
    assert set(kept) <= set(candidates)
    for key, value in kept.items():
        assert value == candidates[key]
    dropped = set(candidates) - set(kept)
    if kept and dropped:
        # Every kept item is newer than every dropped one; ties go to the larger id.
        weakest = min((rank(candidates[k]), k) for k in kept)
        strongest = max((rank(candidates[k]), k) for k in dropped)
        assert weakest > strongest


@settings(max_examples=150, deadline=None)
@given(scenario(capped=True))
def test_caps_keep_exactly_the_newest(sc):
    now, retention, (state,) = sc
    out = compact(state, now, retention)
    uncapped = compact(state, now, retention.model_copy(update={
        "max_series": 100_000, "max_error_patterns": 100_000, "max_insights": 100_000,
        "max_optimizations": 100_000}))

    def last_bucket(series: dict) -> int:
        return max(max(b) for b in series["tiers"].values() if b)

    _assert_newest(out["metrics"], uncapped["metrics"], retention.max_series, last_bucket)
    _assert_newest(out["error_patterns"], uncapped["error_patterns"],
                   retention.max_error_patterns, lambda p: p["last_seen"])
    _assert_newest(out["insights"], uncapped["insights"], retention.max_insights,
                   lambda v: v.get("last_seen") or 0)
    _assert_newest(out["optimizations"], uncapped["optimizations"],
                   retention.max_optimizations, lambda r: r["stamp"][0])


# --- checkpoint size ------------------------------------------------------------------------------

DAY_START = BASE_TS - BASE_TS % DAY
SIZE_NOW = DAY_START + 3 * 3600
VALUES = [0.5 * 1.1**i for i in range(20)]


def _batch(stream: int, per_bucket: int, minutes: int) -> list[InboxRow]:
    """Events for 5 series and 3 error patterns in each of ``minutes`` minute buckets."""
    rows: list[InboxRow] = []
    for m in range(minutes):
        start = SIZE_NOW - 60 * (m + 1)
        for s in range(5):
            for i in range(per_bucket):
                rows.append(("metric", {"s": f"a/s{s}", "v": VALUES[i % 20], "t": start + i % 60,
                                        "u": "ms"}))
        for e in range(3):
            for i in range(per_bucket // 10):
                rows.append(("error", {"id": f"E|{e}", "type": "E", "norm": str(e), "msg": "m",
                                       "a": f"agent{i % 3}", "t": start + i % 60}))
    return [InboxRow(stream, i + 1, k, orjson.dumps(p)) for i, (k, p) in enumerate(rows)]


def _checkpoint_size(batches: int, minutes: int) -> int:
    retention = RetentionConfig()
    state: dict[str, Any] = {}
    for n in range(batches):  # each batch: fold, merge into the state, compact (as the fold)
        state = merge(state, fold_rows(_batch(n + 1, 20, minutes)).delta)
        state = {**state, **compact(state, SIZE_NOW, retention)}
    growing = {ch: state[ch] for ch in ("metrics", "error_patterns")}
    return len(ormsgpack.packb(growing, option=ormsgpack.OPT_NON_STR_KEYS))


def test_checkpoint_size_depends_on_buckets_not_events():
    one = _checkpoint_size(batches=1, minutes=30)
    ten = _checkpoint_size(batches=10, minutes=30)  # 10x the events, same buckets
    assert ten <= one * 1.06  # only integer widths (counts) grow
    more_buckets = _checkpoint_size(batches=1, minutes=90)  # same events per bucket, 3x buckets
    assert more_buckets >= one * 2
