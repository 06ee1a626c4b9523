"""Properties of the mergeable quantile sketch (``state.sketch``).

Checked claims: merging is associative and commutative (exact for count, min, max, zeros and
bins; ``sum`` up to float rounding), merging equals building one sketch from all values (also
across the ``MAX_BINS`` collapse), quantiles are within ``RELATIVE_ACCURACY`` of the exact
order statistic while nothing collapses (and for the retained top range when it does),
quantiles are monotone in ``q`` and stay within ``[min, max]``.
"""

from __future__ import annotations

import copy
import math

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from state import sketch
from state.sketch import (
    COUNT,
    GAMMA,
    MAX,
    MAX_BINS,
    MIN,
    NEG_BINS,
    NEG_OFF,
    POS_BINS,
    POS_OFF,
    RELATIVE_ACCURACY,
    SUM,
    ZEROS,
)

SETTINGS = settings(max_examples=150, deadline=None)
EXACT_FIELDS = (COUNT, MIN, MAX, ZEROS, POS_OFF, POS_BINS, NEG_OFF, NEG_BINS)

# Any finite value up to 1e100 (no overflow of sums), with zeros and signed zeros mixed in.
any_value = st.one_of(
    st.floats(min_value=-1e100, max_value=1e100, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324, -5e-324]),
)
# Values spread over many bins (index -150..150 of both signs): the collapse happens often.
binned_value = st.builds(
    lambda sign, idx, frac: sign * GAMMA ** (idx + frac),
    st.sampled_from([1.0, -1.0]),
    st.integers(-150, 150),
    st.floats(0.0, 1.0),
) | st.just(0.0)
value = any_value | binned_value
values = st.lists(value, max_size=40)


def _scale(vals: list[float]) -> float:
    return sum(abs(v) for v in vals)


def assert_agg_equal(a: list, b: list, scale: float) -> None:
    """Exact on every field except ``sum``, which may differ by float rounding."""
    for i in EXACT_FIELDS:
        assert a[i] == b[i], (i, a, b)
    assert math.isclose(a[SUM], b[SUM], rel_tol=1e-9, abs_tol=1e-12 * scale + 1e-300), (a, b)


def _exact_quantile(vals: list[float], q: float) -> float:
    """The implementation's rank definition: rank = q * (n - 1), the lower order statistic."""
    ordered = sorted(vals)
    if q <= 0:
        return ordered[0]
    if q >= 1:
        return ordered[-1]
    return ordered[math.floor(q * (len(ordered) - 1))]


def _span(agg: list) -> int:
    return max(len(agg[POS_BINS]), len(agg[NEG_BINS]))


# --- merge laws ---------------------------------------------------------------------------------


@SETTINGS
@given(values, values)
def test_merge_is_commutative(xs, ys):
    a, b = sketch.from_values(xs), sketch.from_values(ys)
    # Float addition is commutative, so even ``sum`` is exactly equal.
    assert sketch.merge(a, b) == sketch.merge(b, a)


@SETTINGS
@given(values, values, values)
@example([1.0], [GAMMA**100], [GAMMA**40])  # every pairwise merge collapses differently
@example([-1.0], [-(GAMMA**100)], [0.0, -(GAMMA**40)])
def test_merge_is_associative(xs, ys, zs):
    a, b, c = (sketch.from_values(v) for v in (xs, ys, zs))
    left = sketch.merge(sketch.merge(a, b), c)
    right = sketch.merge(a, sketch.merge(b, c))
    assert_agg_equal(left, right, _scale(xs + ys + zs))


@SETTINGS
@given(st.lists(values, max_size=6))
@example([[1.0, GAMMA**10], [GAMMA**70], [GAMMA**130, -2.0], [0.0]])
def test_merging_equals_building_from_all_values(parts):
    everything = [v for part in parts for v in part]
    merged = sketch.merge_all([sketch.from_values(p) for p in parts])
    whole = sketch.from_values(everything)
    if merged is None:
        assert parts == []
        return
    assert_agg_equal(merged, whole, _scale(everything))
    assert merged[COUNT] == len(everything)
    assert sum(merged[POS_BINS]) + sum(merged[NEG_BINS]) + merged[ZEROS] == len(everything)
    assert _span(merged) <= MAX_BINS


@SETTINGS
@given(values)
def test_merge_with_empty_is_identity(xs):
    a, empty = sketch.from_values(xs), sketch.from_values([])
    assert sketch.merge(a, empty) == a
    assert sketch.merge(empty, a) == a


@SETTINGS
@given(values, values)
def test_merge_does_not_mutate_its_inputs(xs, ys):
    a, b = sketch.from_values(xs), sketch.from_values(ys)
    a_copy, b_copy = copy.deepcopy(a), copy.deepcopy(b)
    sketch.merge(a, b)
    sketch.merge(b, a)
    assert a == a_copy
    assert b == b_copy


def test_collapse_is_triggered_and_bounds_the_size():
    agg = sketch.from_values([GAMMA**i for i in range(0, 300, 3)])
    assert len(agg[POS_BINS]) == MAX_BINS
    assert agg[POS_BINS][0] > 1  # the collapsed low bins ended up in the lowest kept bin
    assert sum(agg[POS_BINS]) == agg[COUNT] == 100


# --- quantiles ----------------------------------------------------------------------------------

unit_q = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def narrow_values(draw):
    """Values (either sign, and zeros) whose magnitudes span < GAMMA**62: no bins collapse."""
    base = draw(st.floats(min_value=1e-6, max_value=1e6))
    item = st.one_of(
        st.builds(lambda s, e: s * base * GAMMA**e, st.sampled_from([1.0, -1.0]),
                  st.floats(0.0, 62.0)),
        st.just(0.0),
    )
    return draw(st.lists(item, min_size=1, max_size=60))


@SETTINGS
@given(narrow_values(), st.lists(unit_q, min_size=1, max_size=10))
def test_quantile_within_relative_accuracy_without_collapse(vals, qs):
    agg = sketch.from_values(vals)
    # Precondition: nothing collapsed (the lowest bin is that of the smallest magnitude).
    for off, sign in ((POS_OFF, 1.0), (NEG_OFF, -1.0)):
        mags = [sign * v for v in vals if sign * v > 0]
        if mags:
            assert agg[off] == sketch.bin_index(min(mags))
    for q in [*qs, 0.0, 0.5, 0.95, 0.99, 1.0]:
        exact = _exact_quantile(vals, q)
        est = sketch.quantile(agg, q)
        assert abs(est - exact) <= RELATIVE_ACCURACY * abs(exact) * (1 + 1e-9), (q, est, exact)


@SETTINGS
@given(
    st.lists(st.builds(lambda e: GAMMA**e, st.floats(-120.0, 120.0)), min_size=1, max_size=60),
    st.lists(unit_q, min_size=1, max_size=10),
)
def test_quantiles_in_the_kept_range_stay_accurate_after_collapse(vals, qs):
    """The collapse only merges the lowest bins: a quantile whose true value lies in a kept bin
    is still within the accuracy; one below the kept range is over-, never under-estimated."""
    agg = sketch.from_values(vals)
    lowest_kept = agg[POS_OFF]
    for q in [*qs, 0.5, 0.95, 0.99]:
        exact = _exact_quantile(vals, q)
        est = sketch.quantile(agg, q)
        if sketch.bin_index(exact) >= lowest_kept:
            assert abs(est - exact) <= RELATIVE_ACCURACY * exact * (1 + 1e-9), (q, est, exact)
        else:
            assert est >= exact


@SETTINGS
@given(st.lists(value, min_size=1, max_size=60), st.lists(unit_q, min_size=2, max_size=12))
def test_quantile_is_monotone_in_q_and_within_min_max(vals, qs):
    agg = sketch.from_values(vals)
    estimates = [sketch.quantile(agg, q) for q in sorted(qs)]
    assert estimates == sorted(estimates)
    lo, hi = min(vals), max(vals)
    for est in estimates:
        assert lo <= est <= hi
    assert sketch.quantile(agg, 0.0) == lo
    assert sketch.quantile(agg, 1.0) == hi
    assert sketch.quantile(agg, -1.0) == lo
    assert sketch.quantile(agg, 2.0) == hi


@SETTINGS
@given(value, st.integers(1, 5), unit_q)
def test_one_distinct_value_is_returned_exactly(v, n, q):
    agg = sketch.from_values([v] * n)
    assert agg[COUNT] == n
    assert agg[MIN] == agg[MAX] == v
    assert sketch.quantile(agg, q) == v  # clamped to [min, max] = [v, v]
    assert sketch.mean(agg) == pytest.approx(v)


def test_empty_sketch():
    empty = sketch.from_values([])
    assert empty[COUNT] == 0
    assert sketch.quantile(empty, 0.5) is None
    assert sketch.quantile(empty, 0.0) is None
    assert sketch.mean(empty) is None
    assert sketch.merge_all([]) is None
    assert sketch.merge(empty, empty) == empty


@SETTINGS
@given(st.lists(value, min_size=1, max_size=40))
def test_mean_matches_values(vals):
    agg = sketch.from_values(vals)
    assert math.isclose(sketch.mean(agg), sum(vals) / len(vals), rel_tol=1e-9,
                        abs_tol=1e-12 * _scale(vals) / len(vals) + 1e-300)


@SETTINGS
@given(st.floats(min_value=5e-324, max_value=1e300))
def test_bin_index_brackets_the_value(v):
    """``pos_bins[i]`` holds values with GAMMA**(i-1) < v <= GAMMA**i (up to log rounding)."""
    i = sketch.bin_index(v)
    log_v = math.log(v) / math.log(GAMMA)
    assume(abs(log_v - round(log_v)) > 1e-9)  # skip values on a bucket boundary
    assert i - 1 < log_v <= i
