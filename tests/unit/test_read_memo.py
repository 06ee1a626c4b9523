"""The read functions' memo (``state.queries``) gives the numbers of a merge of every bucket.

Each step changes the state the way the fold does (new buckets, late events landing in old
buckets, a newly decoded copy of the same checkpoint, the clock moving across bucket and tier
boundaries) and compares every window and summary with the same call after ``forget()``,
and ``span_agg`` with the plain merge of the buckets it covers (the code before the memo).
"""

from __future__ import annotations

import copy

import ormsgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from state import queries, sketch
from state.fold import DeltaBuilder
from state.schema import TIERS, apply_update

NOW = 1_800_000_000.0  # a fixed "now", on no bucket boundary of any tier
HOURS = (1, 2, 24, 25, 168, 24 * 29, 24 * 40)


def plain_span(state: dict, series: str, start: float, end: float, tier: str) -> list | None:
    """The window merge as it was before the memo: every bucket merged on every call."""
    data = (state.get("metrics") or {}).get(series)
    if not data:
        return None
    buckets = data["tiers"].get(tier, {})
    return sketch.merge_all([agg for b, agg in buckets.items() if start <= b < end])


MEMOS = queries.MEMOS


def uncached(fn, *args):
    """``fn(*args)`` from an empty memo; the memo is left as it was (so the calls under test
    keep what they remembered from earlier states)."""
    saved = [m.entries.copy() for m in MEMOS]
    queries.forget()
    try:
        return fn(*args)
    finally:
        for m, entries in zip(MEMOS, saved, strict=True):
            m.entries.clear()
            m.entries.update(entries)


values = st.one_of(
    st.floats(min_value=1e-6, max_value=1e9, allow_nan=False),
    st.floats(min_value=-1e6, max_value=-1e-6, allow_nan=False),
    st.just(0.0),
    st.sampled_from([1e9, 1e-6, 5.0]),  # outliers and bursts of one value
)
events = st.lists(st.tuples(st.integers(0, 4), st.floats(0, 40 * 86400), values),
                  min_size=1, max_size=60)
step = st.tuples(events, st.floats(0, 7200), st.booleans())


def fold(state: dict, batch: list[tuple[int, float, float]], now: float) -> dict:
    """``batch`` (series, age, value) folded in as the fold node would: a new state whose
    touched series, tiers and buckets are new objects, the rest shared."""
    builder = DeltaBuilder()
    for s, age, value in batch:
        builder.metric(f"agent/s{s}", value, now - age, "ms")
    return apply_update(state, builder.build())


def assert_windows_exact(state: dict, now: float) -> None:
    for series in state.get("metrics") or {}:
        for tier, width in TIERS:
            for hours in HOURS:
                start = queries._window_start(now, hours, width)
                got = queries.span_agg(state, series, start, int(now) + 1, tier)
                assert got == plain_span(state, series, start, int(now) + 1, tier)
    for hours in HOURS:
        assert queries.performance_summary(state, hours, now) == \
            uncached(queries.performance_summary, state, hours, now)
        assert queries.error_patterns(state, now, time_window_hours=hours) == \
            uncached(queries.error_patterns, state, now, None, 1, hours)


@settings(max_examples=40, deadline=None)
@given(st.lists(step, min_size=1, max_size=6))
def test_memo_matches_a_merge_of_every_bucket(steps: list) -> None:
    queries.forget()
    state: dict = {}
    now = NOW
    for batch, advance, redecode in steps:
        now += advance
        state = fold(state, batch, now)
        if redecode:  # a new checkpoint of the same values: equal buckets, new objects
            state = ormsgpack.unpackb(ormsgpack.packb(state, option=ormsgpack.OPT_NON_STR_KEYS),
                                      option=ormsgpack.OPT_NON_STR_KEYS)
        assert_windows_exact(state, now)
        assert_windows_exact(state, now)  # the second time from the memo


def test_late_event_in_an_old_bucket_changes_the_window() -> None:
    queries.forget()
    state = fold({}, [(0, 3600 * h + 30, float(h + 1)) for h in range(48)], NOW)
    before = queries.performance_summary(state, 24, NOW)["series"]["agent/s0"]
    late = fold(state, [(0, 3600 * 20 + 10, 1e6)], NOW)  # 20 hours ago: a closed bucket
    after = queries.performance_summary(late, 24, NOW)["series"]["agent/s0"]
    assert after["count"] == before["count"] + 1 and after["max"] == 1e6
    assert after == uncached(queries.performance_summary, late, 24, NOW)["series"]["agent/s0"]
    # the old state still reads as it was (entries are checked, not trusted)
    assert queries.performance_summary(state, 24, NOW)["series"]["agent/s0"] == before


def test_window_moves_with_the_clock_across_buckets() -> None:
    queries.forget()
    # buckets ahead of the first "now" too: a later end takes them in, with the same start
    state = fold({}, [(1, m * 60.0 + 1, float(m)) for m in range(-130, 180)], NOW)
    for later in (0, 1, 20, 59, 60, 61, 90, 3599, 3600, 7200):
        now = NOW + later
        assert queries.performance_summary(state, 1, now) == \
            uncached(queries.performance_summary, state, 1, now)


def test_many_series_a_day_of_traffic() -> None:
    queries.forget()
    batch = [(s % 5, (i * 37) % 86400 + 0.5, float((i * 7919) % 1000))
             for s in range(5) for i in range(2000)]
    state = fold({}, batch, NOW)
    for s in range(40):  # many more series, sharing the memo
        state = fold(state, [(0, 10.0, 1.0)], NOW)
        state = apply_update(state, {"metrics": {
            f"other/s{s}": copy.deepcopy(state["metrics"]["agent/s0"])}})
    assert_windows_exact(state, NOW)


def test_config_is_validated_once_per_config_value() -> None:
    queries.forget()
    state = {"config": {"retention.minute_buckets": {"value": 30, "stamp": [1, 0, 1]}}}
    first = queries.config_of(state)
    assert first.retention.minute_buckets == 30
    assert queries.config_of(copy.deepcopy(state)) is first  # equal channel: the same one
    other = {"config": {"retention.minute_buckets": {"value": 40, "stamp": [2, 0, 1]}}}
    assert queries.config_of(other).retention.minute_buckets == 40
    assert queries.config_of({}).retention.minute_buckets != 30
