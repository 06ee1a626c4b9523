"""Properties of the mergeable quantile sketch (``state.sketch``).

Checked claims: every quantile is within ``RELATIVE_ACCURACY`` of the exact nearest-rank value
on hostile data (narrow, log-uniform 1e-3..1e6, spans up to 1e9 : 1, outliers at 1000x the
median, zeros, negatives, bursts of one value) and for any span up to ``MAX_RATIO``; past it
the lowest bins collapse and the kept range stays accurate. Merging is exact (count, min, max,
zeros, bins; ``sum`` up to float rounding), associative and commutative, and ``merge_all`` is
the pairwise fold bit for bit. Aggregates in the older dense format read, merge and migrate to
the sparse one. Storage is sparse: a narrow distribution costs a few bytes, a bin about one.
The same data goes through DataDog's ``ddsketch`` (same log mapping) as a reference.
"""

from __future__ import annotations

import copy
import math
import random
from fractions import Fraction
from functools import reduce

import ormsgpack
import pytest
from ddsketch import DDSketch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from state import sketch
from state.sketch import (
    COUNT,
    GAMMA,
    MAX,
    MAX_BINS,
    MAX_RATIO,
    MIN,
    NEG,
    POS,
    RELATIVE_ACCURACY,
    SUM,
    ZEROS,
)

SETTINGS = settings(max_examples=150, deadline=None)
EXACT_FIELDS = (COUNT, MIN, MAX, ZEROS, POS, NEG)
TOL = RELATIVE_ACCURACY * (1 + 1e-9)  # log rounding on a bin boundary
QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)

# Any finite value up to 1e100 (no overflow of sums), with zeros and signed zeros mixed in.
any_value = st.one_of(
    st.floats(min_value=-1e100, max_value=1e100, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 5e-324, -5e-324]),
)
# Values spread over ~6,000 bin keys of both signs: the collapse at MAX_BINS happens often.
binned_value = st.builds(
    lambda sign, idx, frac: sign * GAMMA ** (idx + frac),
    st.sampled_from([1.0, -1.0]),
    st.integers(-3000, 3000),
    st.floats(0.0, 1.0),
) | st.just(0.0)
value = any_value | binned_value
values = st.lists(value, max_size=40)
unit_q = st.floats(min_value=0.0, max_value=1.0)


def exact_quantile(vals: list[float], q: float) -> float:
    """The nearest-rank q-quantile: the smallest value with at least q * n values <= it."""
    ordered = sorted(vals)
    if q <= 0:
        return ordered[0]
    if q >= 1:
        return ordered[-1]
    return ordered[max(1, math.ceil(Fraction(q) * len(ordered))) - 1]


def lower_rank_quantile(vals: list[float], q: float) -> float:
    """DDSketch's rank definition: the element of 0-based rank floor(q * (n - 1))."""
    ordered = sorted(vals)
    return ordered[math.floor(q * (len(ordered) - 1))]


def rel_err(est: float, exact: float) -> float:
    return abs(est - exact) / abs(exact) if exact else abs(est)


def _scale(vals: list[float]) -> float:
    return sum(abs(v) for v in vals)


def assert_agg_equal(a: list, b: list, scale: float) -> None:
    """Exact on every field except ``sum``, which may differ by float rounding."""
    assert len(a) == len(b) == 7
    for i in EXACT_FIELDS:
        assert a[i] == b[i], (i, a, b)
    assert math.isclose(a[SUM], b[SUM], rel_tol=1e-9, abs_tol=1e-12 * scale + 1e-300), (a, b)


def key_span(agg: list) -> int:
    pos, neg = sketch.bins(agg)
    return max((s[-1][0] - s[0][0] + 1 for s in (pos, neg) if s), default=0)


def legacy_from_values(vals: list[float]) -> list:
    """The dense format older checkpoints hold (no collapse: the spans used here are small)."""
    pos: dict[int, int] = {}
    neg: dict[int, int] = {}
    for v in vals:
        if v:
            side = pos if v > 0 else neg
            i = sketch.bin_index(abs(v))
            side[i] = side.get(i, 0) + 1

    def dense(d: dict[int, int]) -> tuple[int, list[int]]:
        if not d:
            return 0, []
        lo = min(d)
        return lo, [d.get(i, 0) for i in range(lo, max(d) + 1)]

    pos_off, pos_bins = dense(pos)
    neg_off, neg_bins = dense(neg)
    return [len(vals), float(sum(vals)), min(vals, default=math.inf),
            max(vals, default=-math.inf), sum(1 for v in vals if v == 0), pos_off, pos_bins,
            neg_off, neg_bins]


# --- hostile distributions ----------------------------------------------------------------------


@st.composite
def hostile(draw) -> list[float]:
    """A base family (narrow, log-uniform 1e-3..1e6, a span of up to 1e9 : 1), optionally with
    rare outliers at 1000x the median, zeros, negatives and bursts of one repeated value."""
    rnd = draw(st.randoms(use_true_random=False))
    n = draw(st.integers(1, 150))
    family = draw(st.sampled_from(("narrow", "log-uniform", "span-1e9")))
    base = draw(st.floats(min_value=1e-6, max_value=1e6))
    if family == "narrow":
        vals = [base * (1 + 0.2 * rnd.random()) for _ in range(n)]
    elif family == "log-uniform":
        vals = [10 ** rnd.uniform(-3, 6) for _ in range(n)]
    else:
        vals = [base, base * 1e9, *(base * 10 ** rnd.uniform(0, 9) for _ in range(n))]
    if draw(st.booleans()):  # rare outliers at 1000x the median
        median = sorted(vals)[len(vals) // 2]
        vals += [median * 1000 * (1 + rnd.random() * 0.1)
                 for _ in range(max(1, len(vals) // 100))]
    if draw(st.booleans()):
        vals += [0.0] * draw(st.integers(1, 50))
    if draw(st.booleans()):  # a random subset flips sign
        flip = draw(st.floats(0.05, 1.0))
        vals = [-v if rnd.random() < flip else v for v in vals]
    if draw(st.booleans()):  # a burst: one value repeated many times
        vals += [rnd.choice(vals)] * draw(st.integers(2, 500))
    rnd.shuffle(vals)
    return vals


def assert_accurate(vals: list[float], agg: list, qs=QS) -> None:
    for q in qs:
        exact = exact_quantile(vals, q)
        est = sketch.quantile(agg, q)
        assert abs(est - exact) <= TOL * abs(exact), (q, est, exact)


@SETTINGS
@given(hostile(), st.lists(unit_q, max_size=10))
def test_quantiles_within_relative_accuracy_on_hostile_data(vals, qs):
    agg = sketch.from_values(vals)
    assert key_span(agg) <= MAX_BINS
    assert_accurate(vals, agg, [*QS, *qs])


@SETTINGS
@given(hostile(), st.integers(1, 8), st.randoms(use_true_random=False))
def test_quantiles_stay_accurate_after_merging_parts(vals, parts, rnd):
    """Split into parts (as minutes are), merged pairwise and at once: the same guarantee."""
    chunks: list[list[float]] = [[] for _ in range(parts)]
    for v in vals:
        chunks[rnd.randrange(parts)].append(v)
    aggs = [sketch.from_values(c) for c in chunks]
    assert_accurate(vals, reduce(sketch.merge, aggs))
    assert_accurate(vals, sketch.merge_all(aggs))


def test_one_timeout_does_not_move_the_median():
    """The case from issue 11: 999 latencies of ~50 ms and one 60 s timeout (the dense store of
    128 bins answered 380 ms for p50, p95 and p99)."""
    vals = [40 + 20 * i / 998 for i in range(999)] + [60_000.0]
    agg = sketch.from_values(vals)
    exact = [exact_quantile(vals, q) for q in (0.5, 0.95, 0.99)]
    assert [round(x) for x in exact] == [50, 59, 60]
    for q, want in zip((0.5, 0.95, 0.99), exact, strict=True):
        assert rel_err(sketch.quantile(agg, q), want) <= TOL
    assert sketch.quantile(agg, 1.0) == 60_000.0


@SETTINGS
@given(st.floats(min_value=1e-300, max_value=1e-10), st.floats(0.0, MAX_BINS - 2.0),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60), st.lists(unit_q, max_size=5))
def test_any_span_up_to_the_bin_limit_keeps_the_guarantee(lo, top, fracs, qs):
    """Magnitudes spanning up to GAMMA ** (MAX_BINS - 2) (~1e35 : 1) never collapse."""
    vals = [lo, lo * GAMMA**top, *(lo * GAMMA ** (top * f) for f in fracs)]
    agg = sketch.from_values(vals)
    assert_accurate(vals, agg, [*QS, *qs])
    assert sketch.merge_all([sketch.from_values([v]) for v in vals])[POS] == agg[POS]


def test_bin_limit_covers_more_than_1e35():
    assert MAX_BINS >= 2048
    assert MAX_RATIO > 1e35
    vals = [1e-3, 1e32, 1.0, 1e6, -1e-30, -1e5]  # 1e35 : 1 for each sign
    assert_accurate(vals, sketch.from_values(vals))


@SETTINGS
@given(
    st.lists(st.builds(lambda e: GAMMA**e, st.floats(-3000.0, 3000.0)), min_size=1, max_size=60),
    st.lists(unit_q, min_size=1, max_size=10),
)
def test_quantiles_in_the_kept_range_stay_accurate_after_collapse(vals, qs):
    """Past the limit only the lowest bins merge: a quantile whose exact value lies in a kept
    bin is still within the accuracy; one below the kept range is over-, never under-estimated."""
    agg = sketch.from_values(vals)
    assert key_span(agg) <= MAX_BINS
    lowest_kept = sketch.bins(agg)[0][0][0]
    for q in [*qs, 0.5, 0.95, 0.99]:
        exact = exact_quantile(vals, q)
        est = sketch.quantile(agg, q)
        if sketch.bin_index(exact) >= lowest_kept:
            assert abs(est - exact) <= TOL * exact, (q, est, exact)
        else:
            assert est >= exact


def test_collapse_is_triggered_and_bounds_the_size():
    vals = [GAMMA**i for i in range(0, 3 * MAX_BINS, 3)]
    agg = sketch.from_values(vals)
    pos, _ = sketch.bins(agg)
    assert key_span(agg) == MAX_BINS
    assert pos[0][1] > 1  # the collapsed low bins ended up in the lowest kept bin
    assert sum(c for _, c in pos) == agg[COUNT] == len(vals)
    assert sketch.bin_count(agg) < MAX_BINS
    assert_accurate(vals, agg, (0.7, 0.9, 0.95, 0.99, 1.0))  # the top third is kept


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


@SETTINGS
@given(st.integers(1, 10_000), unit_q)
def test_nearest_rank_is_exact_for_the_float_q(n, q):
    assume(0 < q < 1)
    k = sketch.nearest_rank(q, n)
    assert 1 <= k <= n
    assert Fraction(k) >= Fraction(q) * n > k - 1


def test_empty_sketch():
    empty = sketch.from_values([])
    assert empty[COUNT] == 0
    assert sketch.quantile(empty, 0.5) is None
    assert sketch.quantile(empty, 0.0) is None
    assert sketch.mean(empty) is None
    assert sketch.merge_all([]) is None
    assert sketch.merge(empty, empty) == empty
    assert sketch.bin_count(empty) == 0


@SETTINGS
@given(st.lists(value, min_size=1, max_size=40))
def test_mean_matches_values(vals):
    agg = sketch.from_values(vals)
    assert math.isclose(sketch.mean(agg), sum(vals) / len(vals), rel_tol=1e-9,
                        abs_tol=1e-12 * _scale(vals) / len(vals) + 1e-300)


@SETTINGS
@given(st.floats(min_value=5e-324, max_value=1e300))
def test_bin_index_brackets_the_value(v):
    """Bin ``k`` holds values with GAMMA**(k-1) < v <= GAMMA**k (up to log rounding)."""
    i = sketch.bin_index(v)
    log_v = math.log(v) / math.log(GAMMA)
    assume(abs(log_v - round(log_v)) > 1e-9)  # skip values on a bucket boundary
    assert i - 1 < log_v <= i
    assert rel_err(sketch.bin_value(i), v) <= TOL


# --- merge laws ---------------------------------------------------------------------------------


@SETTINGS
@given(values, values)
def test_merge_is_commutative(xs, ys):
    a, b = sketch.from_values(xs), sketch.from_values(ys)
    # Float addition is commutative, so even ``sum`` is exactly equal.
    assert sketch.merge(a, b) == sketch.merge(b, a)


@SETTINGS
@given(values, values, values)
@example([1.0], [GAMMA**3000], [GAMMA**1000])  # every pairwise merge collapses differently
@example([-1.0], [-(GAMMA**3000)], [0.0, -(GAMMA**1000)])
def test_merge_is_associative(xs, ys, zs):
    a, b, c = (sketch.from_values(v) for v in (xs, ys, zs))
    left = sketch.merge(sketch.merge(a, b), c)
    right = sketch.merge(a, sketch.merge(b, c))
    assert_agg_equal(left, right, _scale(xs + ys + zs))


@SETTINGS
@given(st.lists(values, max_size=6))
@example([[1.0, GAMMA**10], [GAMMA**1500], [GAMMA**2600, -2.0], [0.0]])
def test_merging_equals_building_from_all_values(parts):
    everything = [v for part in parts for v in part]
    aggs = [sketch.from_values(p) for p in parts]
    merged = sketch.merge_all(aggs)
    if merged is None:
        assert parts == []
        return
    assert merged == reduce(sketch.merge, aggs)  # the pairwise fold, bit for bit
    assert_agg_equal(merged, sketch.from_values(everything), _scale(everything))
    pos, neg = sketch.bins(merged)
    assert sum(c for _, c in pos + neg) + merged[ZEROS] == merged[COUNT] == len(everything)
    assert key_span(merged) <= MAX_BINS


@SETTINGS
@given(values)
def test_merge_with_empty_is_identity(xs):
    a, empty = sketch.from_values(xs), sketch.from_values([])
    assert sketch.merge(a, empty) == a
    assert sketch.merge(empty, a) == a
    assert sketch.merge_all([a]) == a


@SETTINGS
@given(values, values)
def test_merge_does_not_mutate_its_inputs(xs, ys):
    a, b = sketch.from_values(xs), sketch.from_values(ys)
    a_copy, b_copy = copy.deepcopy(a), copy.deepcopy(b)
    sketch.merge(a, b)
    sketch.merge(b, a)
    sketch.merge_all([a, b, a])
    assert a == a_copy
    assert b == b_copy


# --- sparse storage -----------------------------------------------------------------------------


def test_bins_are_stored_sparsely():
    """Only non-empty bins are stored, ~one msgpack byte each while counts are small."""
    narrow = sketch.from_values([50.0 * (1 + 0.01 * (i % 3)) for i in range(10_000)])
    assert sketch.bin_count(narrow) <= 2
    assert len(ormsgpack.packb(narrow)) < 64
    gap = sketch.from_values([1.0, 1e9])  # two bins ~520 keys apart: no padding between
    assert sketch.bin_count(gap) == 2
    assert len(gap[POS]) <= 4 and len(ormsgpack.packb(gap)) < 64
    rnd = random.Random(3)
    wide = sketch.from_values([10 ** rnd.uniform(0, 9) for _ in range(5_000)])
    n_bins = sketch.bin_count(wide)
    assert n_bins > 400  # ~520 keys in the span, nearly all hit
    assert len(ormsgpack.packb(wide[POS])) <= 1.2 * n_bins + 8


@SETTINGS
@given(values)
def test_bins_round_trip_through_the_encoding(xs):
    agg = sketch.from_values(xs)
    pos, neg = sketch.bins(agg)
    for side, sign in ((pos, 1), (neg, -1)):
        keys = [k for k, _ in side]
        assert keys == sorted(set(keys))
        assert all(c >= 1 for _, c in side)
        expected: dict[int, int] = {}
        for v in xs:
            if sign * v > 0:
                expected[sketch.bin_index(sign * v)] = expected.get(
                    sketch.bin_index(sign * v), 0) + 1
        if key_span(sketch.from_values([v for v in xs if sign * v > 0])) < MAX_BINS and (
                not expected or max(expected) - min(expected) < MAX_BINS):
            assert dict(side) == expected


# --- the older dense format ---------------------------------------------------------------------


def test_a_dense_aggregate_from_an_old_checkpoint_reads_and_migrates():
    # 1.0, 2.0 and 3.0 as the dense store wrote them: bins 0, 18 and 28 of offset 0
    old = [3, 6.0, 1.0, 3.0, 0, 0, [1] + [0] * 17 + [1] + [0] * 9 + [1], 0, []]
    assert [sketch.bin_index(v) for v in (1.0, 2.0, 3.0)] == [0, 18, 28]
    assert sketch.is_agg(old)
    new = sketch.migrate(old)
    assert new == sketch.from_values([1.0, 2.0, 3.0])
    assert sketch.bins(old) == sketch.bins(new) == ([(0, 1), (18, 1), (28, 1)], [])
    assert sketch.bin_count(old) == 3
    assert sketch.quantile(old, 0.5) == sketch.quantile(new, 0.5)
    assert rel_err(sketch.quantile(old, 0.5), 2.0) <= TOL
    assert sketch.load(old) == new


@SETTINGS
@given(st.lists(hostile(), min_size=1, max_size=4), st.lists(st.booleans(), min_size=4,
                                                             max_size=4))
def test_dense_and_sparse_aggregates_merge_into_the_sparse_format(parts, legacy):
    parts = [p for p in parts if max(abs(v) for v in p) / min(
        (abs(v) for v in p if v), default=1.0) < GAMMA**120]  # spans the dense store held
    assume(parts)
    mixed = [legacy_from_values(p) if old else sketch.from_values(p)
             for p, old in zip(parts, legacy, strict=False)]
    sparse = [sketch.from_values(p) for p in parts]
    for agg, new in zip(mixed, sparse, strict=True):
        assert sketch.migrate(agg) == new
        assert sketch.bins(agg) == sketch.bins(new)
        for q in QS:
            assert sketch.quantile(agg, q) == sketch.quantile(new, q)
    scale = _scale([v for p in parts for v in p])
    assert_agg_equal(sketch.merge_all(mixed), sketch.merge_all(sparse), scale)
    assert_agg_equal(sketch.migrate(reduce(sketch.merge, mixed)), reduce(sketch.merge, sparse),
                     scale)


@SETTINGS
@given(values)
def test_load_accepts_both_formats(xs):
    new = sketch.from_values(xs)
    assert sketch.load(copy.deepcopy(new)) == new
    if key_span(new) < 120:
        assert sketch.load(legacy_from_values(xs))[2:] == new[2:]


@pytest.mark.parametrize("bad, words", [
    ("x", "list of 7"),
    ([1, 1.0, 1.0, 1.0, 0, [0, 0]], "list of 7"),
    ([-1, 0.0, 1.0, 1.0, 0, [], []], "non-negative integers"),
    ([1, "1", 1.0, 1.0, 0, [0, 0], []], "numbers"),
    ([1, 1.0, 1.0, 1.0, 0, [0, 1.5], []], "list of integers"),
    ([1, 1.0, 1.0, 1.0, 0, [0], []], "list of integers"),
    ([1, 1.0, 1.0, 1.0, 0, [0, 0, -3], []], "list of integers"),
    ([2, 2.0, 1.0, 1.0, 0, [0, 0], []], "do not add up"),
    ([1, 1.0, 2.0, 1.0, 0, [0, 0], []], "min is above its max"),
    ([2, 2.0, 1.0, 9.0, 0, [0, 0, -MAX_BINS, 0], []], f"span more than {MAX_BINS}"),
    ([1, 1.0, 1.0, 1.0, 0, 0, [1.5], 0, []], "legacy sketch bins"),
])
def test_load_rejects_malformed_aggregates_with_a_clear_error(bad, words):
    with pytest.raises(ValueError, match=words):
        sketch.load(bad)


def test_load_canonicalises_the_encoding():
    # bins 0 and 8 written with two skips in a row: one skip, then a gap of 4 inline
    loaded = sketch.load([2, 2.0, 1.0, 9.0, 0, [0, 0, -3, -4, 0], []])
    assert loaded[POS] == [0, 0, -4, 3]
    assert sketch.bins(loaded) == ([(0, 1), (8, 1)], [])


# --- DataDog's ddsketch as a reference ------------------------------------------------------------


def ddsketch_of(vals: list[float]) -> DDSketch:
    dd = DDSketch(relative_accuracy=RELATIVE_ACCURACY)
    for v in vals:
        dd.add(v)
    return dd


@settings(max_examples=60, deadline=None)
@given(hostile())
def test_errors_within_the_guarantee_like_ddsketch(vals):
    """Same data through ddsketch at the same relative accuracy: both errors within it (each
    against its own rank definition), ours never worse than ddsketch's plus the accuracy."""
    assume(all(v == 0 or abs(v) > 1e-300 for v in vals))  # ddsketch counts tinier ones as 0
    agg, dd = sketch.from_values(vals), ddsketch_of(vals)
    for q in (0.01, 0.5, 0.9, 0.95, 0.99):
        ours = rel_err(sketch.quantile(agg, q), exact_quantile(vals, q))
        theirs = rel_err(dd.get_quantile_value(q), lower_rank_quantile(vals, q))
        assert ours <= TOL
        assert theirs <= TOL
        assert ours <= theirs + TOL  # the same rounding slack as TOL on a bin boundary


def test_same_estimates_as_ddsketch_at_the_same_rank():
    """ddsketch uses the same log mapping and bin value: on 20,000 log-uniform values over
    1e-3..1e6 with mixed signs, zeros and a burst, both sketches answer the same value at the
    same rank (ours clamped to the exact min and max), for 999 quantiles."""
    rnd = random.Random(11)
    vals = [rnd.choice((1, 1, 1, -1)) * 10 ** rnd.uniform(-3, 6) for _ in range(20_000)]
    vals += [0.0] * 300 + [42.0] * 2_000
    agg, dd = sketch.from_values(vals), ddsketch_of(vals)
    n = len(vals)
    for i in range(1, 1000):
        q = i / 1000
        k = sketch.nearest_rank(q, n)
        # ddsketch's element of 0-based rank floor(q' * (n - 1)) is ours, k - 1, for this q'
        theirs = dd.get_quantile_value((k - 0.5) / (n - 1))
        theirs = min(max(theirs, agg[MIN]), agg[MAX])
        assert sketch.quantile(agg, q) == pytest.approx(theirs, rel=1e-9, abs=1e-12), q


@SETTINGS
@given(st.lists(value, max_size=60), st.lists(unit_q | st.sampled_from(QS), max_size=8))
def test_quantiles_in_one_walk_are_each_quantile(vals, qs):
    agg = sketch.from_values(vals)
    for wanted in (sorted(qs), qs):  # ascending: one walk; any order: one walk per q
        assert sketch.quantiles(agg, wanted) == [sketch.quantile(agg, q) for q in wanted]


@SETTINGS
@given(st.lists(values, min_size=1, max_size=8), st.lists(values, max_size=8),
       st.lists(st.booleans(), min_size=16, max_size=16))
@example([[1.0], [GAMMA**3000]], [[GAMMA**1500]], [False] * 16)  # a collapse, then none
def test_bin_counts_taken_and_added_are_the_merge_of_what_they_hold(kept, gone, legacy):
    """Counts that held ``kept`` and ``gone`` and had ``gone`` taken out give the bins of a
    merge of ``kept`` alone, bit for bit: also across a collapse, with one or no aggregate
    with bins of a sign, and with dense (old format) aggregates."""
    def make(i: int, vals: list[float]) -> list:
        return legacy_from_values(vals) if legacy[i % 16] else sketch.from_values(vals)

    keep = [make(i, v) for i, v in enumerate(kept)]
    drop = [make(i + len(kept), v) for i, v in enumerate(gone)]
    counts = sketch.BinCounts(drop[: len(drop) // 2])
    for agg in keep + drop[len(drop) // 2:]:
        counts.add(agg)
    for agg in drop:
        counts.take(agg)
    assert counts.stores(keep) == sketch.merge_bins(keep)
    assert counts.copy().stores(keep) == sketch.merge_bins(keep)
