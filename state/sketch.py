"""Mergeable quantile sketch (DDSketch-style log buckets) stored as plain lists.

Plain lists keep checkpoints small (msgpack, no class tags) and make merging a pure function.
An aggregate is ``[count, sum, min, max, zeros, pos_off, pos_bins, neg_off, neg_bins]``:
``pos_bins[i]`` counts values ``v > 0`` with ``ceil(log(v) / log(GAMMA)) == pos_off + i``
(``neg_*`` likewise for ``-v``). Any quantile is within ``RELATIVE_ACCURACY`` of the true
value while the store spans at most ``MAX_BINS`` indices; beyond that the lowest bins are
collapsed, which keeps high quantiles (p95, p99) exact to the accuracy and bounds the size.

Merging is associative and commutative (exactly for count, bins, min and max; up to float
rounding for ``sum``): the collapse threshold depends only on the highest index present.
"""

from __future__ import annotations

import math
from itertools import islice
from operator import add

RELATIVE_ACCURACY = 0.02
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
MAX_BINS = 128

Agg = list  # [count, sum, min, max, zeros, pos_off, pos_bins, neg_off, neg_bins]

COUNT, SUM, MIN, MAX, ZEROS, POS_OFF, POS_BINS, NEG_OFF, NEG_BINS = range(9)


def bin_index(magnitude: float) -> int:
    """Index of the log bucket holding a positive magnitude."""
    return math.ceil(math.log(magnitude) * _INV_LOG_GAMMA)


def _bin_value(index: int) -> float:
    """Representative value of a bucket: relative error at most RELATIVE_ACCURACY."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


def _dense(bins: dict[int, int]) -> tuple[int, list[int]]:
    if not bins:
        return 0, []
    lo, hi = min(bins), max(bins)
    if hi - lo >= MAX_BINS:
        cut = hi - MAX_BINS + 1
        low = sum(c for i, c in bins.items() if i < cut)
        bins = {i: c for i, c in bins.items() if i >= cut}
        bins[cut] = bins.get(cut, 0) + low
        lo = cut
    dense = [0] * (hi - lo + 1)
    for i, c in bins.items():
        dense[i - lo] += c
    return lo, dense


class Accumulator:
    """Mutable builder used on hot paths (the fold); ``freeze`` gives an immutable Agg."""

    __slots__ = ("count", "max", "min", "neg", "pos", "sum", "zeros")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value > 0:
            i = math.ceil(math.log(value) * _INV_LOG_GAMMA)
            self.pos[i] = self.pos.get(i, 0) + 1
        elif value < 0:
            i = math.ceil(math.log(-value) * _INV_LOG_GAMMA)
            self.neg[i] = self.neg.get(i, 0) + 1
        else:
            self.zeros += 1

    def freeze(self) -> Agg:
        pos_off, pos = _dense(self.pos)
        neg_off, neg = _dense(self.neg)
        return [self.count, self.sum, self.min, self.max, self.zeros, pos_off, pos, neg_off, neg]


def from_values(values: list[float]) -> Agg:
    acc = Accumulator()
    for v in values:
        acc.add(v)
    return acc.freeze()


def _merge_bins(off_a: int, a: list[int], off_b: int, b: list[int]) -> tuple[int, list[int]]:
    if not a:
        return off_b, list(b)
    if not b:
        return off_a, list(a)
    lo = min(off_a, off_b)
    hi = max(off_a + len(a), off_b + len(b)) - 1
    if hi - lo < MAX_BINS:
        out = [0] * (hi - lo + 1)
        start = off_a - lo
        out[start:start + len(a)] = map(add, out[start:start + len(a)], a)
        start = off_b - lo
        out[start:start + len(b)] = map(add, out[start:start + len(b)], b)
        return lo, out
    merged: dict[int, int] = {}
    for off, bins in ((off_a, a), (off_b, b)):
        for i, c in enumerate(bins):
            if c:
                merged[off + i] = merged.get(off + i, 0) + c
    return _dense(merged)


def merge(a: Agg, b: Agg) -> Agg:
    """Pure merge of two aggregates."""
    pos_off, pos = _merge_bins(a[POS_OFF], a[POS_BINS], b[POS_OFF], b[POS_BINS])
    neg_off, neg = _merge_bins(a[NEG_OFF], a[NEG_BINS], b[NEG_OFF], b[NEG_BINS])
    return [
        a[COUNT] + b[COUNT],
        a[SUM] + b[SUM],
        min(a[MIN], b[MIN]),
        max(a[MAX], b[MAX]),
        a[ZEROS] + b[ZEROS],
        pos_off,
        pos,
        neg_off,
        neg,
    ]


def _merge_bins_all(stores: list[tuple[int, list[int]]]) -> tuple[int, list[int]]:
    """``_merge_bins`` folded left to right over ``stores``, in one pass.

    Stores built here never start or end with a zero count; for those, collapsing once at the
    final highest index gives exactly what collapsing step by step gives. Any other shape takes
    the step-by-step path, so the result is always identical to the pairwise fold.
    """
    live = [(off, bins) for off, bins in stores if bins]
    if not live:
        return stores[-1][0], []
    if len(live) == 1:
        return live[0][0], list(live[0][1])
    if not all(bins[0] and bins[-1] for _, bins in live):
        off, bins = live[0]
        for off_b, b in islice(live, 1, None):
            off, bins = _merge_bins(off, bins, off_b, b)
        return off, bins
    lo = min(off for off, _ in live)
    hi = max(off + len(bins) for off, bins in live) - 1
    cut = hi - MAX_BINS + 1 if hi - lo >= MAX_BINS else lo
    out = [0] * (hi - cut + 1)
    low = 0
    for off, bins in live:
        start = off - cut
        if start < 0:  # below the collapse threshold: counted into the lowest kept bin
            low += sum(bins[:-start])
            bins = bins[-start:]
            start = 0
        if bins:
            end = start + len(bins)
            out[start:end] = map(add, out[start:end], bins)
    out[0] += low
    return cut, out


def merge_all(aggs: list[Agg]) -> Agg | None:
    """``merge`` folded left to right over ``aggs`` (None if empty), in one pass: the same
    result, bit for bit, at a fraction of the cost for many aggregates (reads, roll-ups)."""
    if not isinstance(aggs, list):
        aggs = list(aggs)
    if not aggs:
        return None
    if len(aggs) == 1:
        return aggs[0]
    first = aggs[0]
    count, total, lo, hi, zeros = first[COUNT], first[SUM], first[MIN], first[MAX], first[ZEROS]
    for a in islice(aggs, 1, None):
        count = count + a[COUNT]
        total = total + a[SUM]
        lo = min(lo, a[MIN])
        hi = max(hi, a[MAX])
        zeros = zeros + a[ZEROS]
    pos_off, pos = _merge_bins_all([(a[POS_OFF], a[POS_BINS]) for a in aggs])
    neg_off, neg = _merge_bins_all([(a[NEG_OFF], a[NEG_BINS]) for a in aggs])
    return [count, total, lo, hi, zeros, pos_off, pos, neg_off, neg]


def quantile(agg: Agg, q: float) -> float | None:
    """Estimated q-quantile (0 <= q <= 1), clamped to the exact min and max."""
    count = agg[COUNT]
    if count <= 0:
        return None
    if q <= 0:
        return float(agg[MIN])
    if q >= 1:
        return float(agg[MAX])
    rank = q * (count - 1)
    seen = 0
    neg_off, neg = agg[NEG_OFF], agg[NEG_BINS]
    for i in range(len(neg) - 1, -1, -1):  # most negative first
        seen += neg[i]
        if seen > rank:
            return _clamp(-_bin_value(neg_off + i), agg)
    seen += agg[ZEROS]
    if seen > rank:
        return 0.0
    pos_off, pos = agg[POS_OFF], agg[POS_BINS]
    for i, c in enumerate(pos):
        seen += c
        if seen > rank:
            return _clamp(_bin_value(pos_off + i), agg)
    return float(agg[MAX])


def _clamp(value: float, agg: Agg) -> float:
    return float(min(max(value, agg[MIN]), agg[MAX]))


def mean(agg: Agg) -> float | None:
    return agg[SUM] / agg[COUNT] if agg[COUNT] else None
