"""Mergeable quantile sketch (DDSketch-style log bins, stored sparsely) as plain lists.

Plain lists keep checkpoints small (msgpack, no class tags) and make merging a pure function.
An aggregate is ``[count, sum, min, max, zeros, pos, neg]``. ``pos`` holds the non-empty bins
of the values ``v > 0``, bin ``k`` holding the values with ``GAMMA**(k-1) < v <= GAMMA**k``,
as one flat list of ints: the lowest key, then one token per non-empty bin (its gap to the
previous bin and its count; see ``_encode``), so a bin costs about one byte of msgpack and an
empty one nothing. ``neg`` does the same for the magnitudes ``-v`` of the values ``v < 0``;
zeros are counted apart.

The guarantee: ``quantile(agg, q)`` is within ``RELATIVE_ACCURACY`` (2 %) of the exact
nearest-rank q-quantile (the smallest stored value with at least ``q * count`` values <= it)
whenever the magnitudes of each sign span at most ``MAX_BINS`` bins, i.e. a max/min ratio up to
``GAMMA ** (MAX_BINS - 1)`` (about 3.6e35 : 1, far beyond 1e9 : 1), whatever the shape: bursts
of one value, rare outliers, zeros and negatives. Beyond that span the bins of the smallest
magnitudes of that sign merge into the lowest kept bin: quantiles whose exact value lies in the
kept range keep the guarantee, lower ones are pulled towards the kept range (never past the
exact ``min``/``max``, to which every estimate is clamped). Count, min, max and zeros are exact.

Merging is exact (counts, bins, min, max, zeros; ``sum`` up to float rounding), associative and
commutative: the collapse threshold depends only on the highest key present. Aggregates in the
older dense format ``[count, sum, min, max, zeros, pos_off, pos_bins, neg_off, neg_bins]``
(checkpoints written before the sparse one) are read by every function here; ``merge`` and
``merge_all`` always return the sparse format, and ``migrate`` converts one explicitly. Code
outside this module reads ``COUNT``, ``SUM``, ``MIN``, ``MAX`` by index and everything else
through these functions, so this module is the one owner of the format.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from functools import reduce
from itertools import islice, pairwise
from operator import add, itemgetter
from typing import Any

RELATIVE_ACCURACY = 0.02
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1.0 / math.log(GAMMA)
MAX_BINS = 2048  # per sign: the span of bin keys kept before the lowest bins collapse
MAX_RATIO = GAMMA ** (MAX_BINS - 1)  # magnitudes within this max/min ratio never collapse

Agg = list  # [count, sum, min, max, zeros, pos, neg]

COUNT, SUM, MIN, MAX, ZEROS, POS, NEG = range(7)
_LENGTH = 7
_LEGACY_LENGTH = 9  # [count, sum, min, max, zeros, pos_off, pos_bins, neg_off, neg_bins]
_LEGACY_POS_OFF, _LEGACY_POS_BINS, _LEGACY_NEG_OFF, _LEGACY_NEG_BINS = 5, 6, 7, 8


def bin_index(magnitude: float) -> int:
    """Key of the log bin holding a positive magnitude."""
    return math.ceil(math.log(magnitude) * _INV_LOG_GAMMA)


def bin_value(index: int) -> float:
    """Representative value of a bin: within RELATIVE_ACCURACY of every value in it."""
    return 2.0 * GAMMA**index / (GAMMA + 1.0)


# --- one sign's bins: [first key, token, token, ...] --------------------------------------------
#
# A cursor starts one below the first key. A token t >= 0 is one non-empty bin: the cursor
# moves up by ``(t & 3) + 1`` (a gap of 1..4 keys) and that bin holds ``(t >> 2) + 1`` values.
# A token t < 0 moves the cursor up by ``-t`` more keys (a gap wider than 4). So a bin with up
# to 32 values next to the previous one costs one byte of msgpack.

_GAP_BITS = 2
_GAP_MASK = (1 << _GAP_BITS) - 1
_MAX_GAP = _GAP_MASK + 1


def _encode(keys: list[int], counts: list[int]) -> list[int]:
    """Ascending keys and their (non-zero) counts -> the store."""
    if not keys:
        return []
    out = [keys[0]]
    append = out.append
    prev = keys[0] - 1
    for k, c in zip(keys, counts, strict=True):
        gap = k - prev
        if gap > _MAX_GAP:
            append(_MAX_GAP - gap)
            gap = _MAX_GAP
        append(((c - 1) << _GAP_BITS) | (gap - 1))
        prev = k
    return out


def _add_into(bins: dict[int, int], store: list[int]) -> None:
    """Add a store's counts into ``{key: count}``."""
    get = bins.get
    k = store[0] - 1
    for t in islice(store, 1, None):
        if t < 0:
            k -= t
        else:
            k += (t & _GAP_MASK) + 1
            bins[k] = get(k, 0) + (t >> _GAP_BITS) + 1


def _take_from(bins: dict[int, int], store: list[int]) -> None:
    """Take a store's counts out of ``{key: count}`` (they were added before); keys left at
    zero are dropped."""
    for k, c in zip(*_decode(store), strict=True):
        left = bins[k] - c
        if left:
            bins[k] = left
        else:
            del bins[k]


def _decode(store: list[int]) -> tuple[list[int], list[int]]:
    """Store -> (ascending keys, counts)."""
    keys: list[int] = []
    counts: list[int] = []
    if store:
        k = store[0] - 1
        for t in islice(store, 1, None):
            if t < 0:
                k -= t
            else:
                k += (t & _GAP_MASK) + 1
                keys.append(k)
                counts.append((t >> _GAP_BITS) + 1)
    return keys, counts


def _store_from(bins: dict[int, int]) -> list[int]:
    """``{key: count}`` -> store, collapsing keys below ``highest - MAX_BINS + 1`` into it."""
    if not bins:
        return []
    keys = sorted(bins)
    counts = list(map(bins.__getitem__, keys))
    if keys[-1] - keys[0] >= MAX_BINS:
        cut = keys[-1] - MAX_BINS + 1
        j = bisect_left(keys, cut)
        low = sum(counts[:j])
        keys, counts = keys[j:], counts[j:]
        if keys[0] == cut:
            counts[0] += low
        else:
            keys.insert(0, cut)
            counts.insert(0, low)
    return _encode(keys, counts)


def _legacy_store(off: int, dense: list[int]) -> list[int]:
    keys = [off + i for i, c in enumerate(dense) if c]
    return _encode(keys, [c for c in dense if c])


def _stores(agg: Agg) -> tuple[list[int], list[int]]:
    """(pos, neg) stores of an aggregate in either format."""
    if len(agg) == _LEGACY_LENGTH:
        return (_legacy_store(agg[_LEGACY_POS_OFF], agg[_LEGACY_POS_BINS]),
                _legacy_store(agg[_LEGACY_NEG_OFF], agg[_LEGACY_NEG_BINS]))
    return agg[POS], agg[NEG]


def _merge_stores(a: list[int], b: list[int]) -> list[int]:
    if not b:
        return list(a)
    if not a:
        return list(b)
    bins: dict[int, int] = {}
    _add_into(bins, a)
    _add_into(bins, b)
    return _store_from(bins)


def _merge_many(stores: list[list[int]]) -> list[int]:
    """One store from many, collapsing once at the end: the same as the pairwise fold, because
    collapsing below a lower threshold first only moves counts to keys that the final
    threshold collapses as well."""
    live = [s for s in stores if s]
    if len(live) <= 1:
        return list(live[0]) if live else []
    bins: dict[int, int] = {}
    for s in live:
        _add_into(bins, s)
    return _store_from(bins)


# --- building -----------------------------------------------------------------------------------


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
        return [self.count, self.sum, self.min, self.max, self.zeros,
                _store_from(self.pos), _store_from(self.neg)]


def from_values(values: Iterable[float]) -> Agg:
    acc = Accumulator()
    for v in values:
        acc.add(v)
    return acc.freeze()


# --- merging ------------------------------------------------------------------------------------


def merge(a: Agg, b: Agg) -> Agg:
    """Pure merge of two aggregates (either format in, the sparse format out)."""
    a_pos, a_neg = _stores(a)
    b_pos, b_neg = _stores(b)
    return [
        a[COUNT] + b[COUNT],
        a[SUM] + b[SUM],
        min(a[MIN], b[MIN]),
        max(a[MAX], b[MAX]),
        a[ZEROS] + b[ZEROS],
        _merge_stores(a_pos, b_pos),
        _merge_stores(a_neg, b_neg),
    ]


def merge_all(aggs: Iterable[Agg]) -> Agg | None:
    """``merge`` folded left to right over ``aggs`` (None if empty), in one pass: the same
    result, bit for bit, at a fraction of the cost for many aggregates (reads, roll-ups)."""
    if not isinstance(aggs, list):
        aggs = list(aggs)
    if not aggs:
        return None
    if len(aggs) == 1:
        return migrate(aggs[0])
    return merge_with_bins(aggs, *merge_bins(aggs))


def merge_bins(aggs: Iterable[Agg], base: tuple[list[int], list[int]] | None = None
               ) -> tuple[list[int], list[int]]:
    """The (pos, neg) stores of ``merge_all`` of ``aggs`` and of the aggregates whose
    ``merge_bins`` is ``base``: bins add up exactly whatever the order or grouping (the
    collapse threshold depends only on the highest key, and collapsing twice is collapsing
    once), so the bins of a window can be kept and merged with one more bucket later."""
    stores = [_stores(a) for a in aggs]
    if base is not None:
        stores.append(base)
    return _merge_many([s[0] for s in stores]), _merge_many([s[1] for s in stores])


def add_bins(parts: Iterable[tuple[list[int], list[int]]]) -> tuple[list[int], list[int]]:
    """The (pos, neg) stores of several ``merge_bins`` results added up: the ``merge_bins``
    of all the aggregates they were merged from (exact, whatever the grouping)."""
    parts = list(parts)
    return _merge_many([p[0] for p in parts]), _merge_many([p[1] for p in parts])


class BinCounts:
    """The bin counts of a multiset of aggregates added up per sign (``{key: count}``, before
    any collapse), which aggregates can be added to and taken out of again: integer counts,
    so exact. ``stores`` is the ``merge_bins`` of the aggregates it holds, the same, bit for
    bit, however they were reached (collapsing depends only on the keys present): a window
    that moved on by a bucket takes one sketch out and one in, instead of merging every
    bucket again."""

    __slots__ = ("live", "neg", "pos")

    def __init__(self, aggs: Iterable[Agg] = ()) -> None:
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.live = [0, 0]  # aggregates held with a non-empty pos, neg store
        for agg in aggs:
            self.add(agg)

    def copy(self) -> BinCounts:
        new = BinCounts()
        new.pos, new.neg, new.live = dict(self.pos), dict(self.neg), list(self.live)
        return new

    def add(self, agg: Agg) -> None:
        for i, (store, bins) in enumerate(zip(_stores(agg), (self.pos, self.neg),
                                              strict=True)):
            if store:
                _add_into(bins, store)
                self.live[i] += 1

    def take(self, agg: Agg) -> None:
        """Take out an aggregate added before (or one equal to it)."""
        for i, (store, bins) in enumerate(zip(_stores(agg), (self.pos, self.neg),
                                              strict=True)):
            if store:
                _take_from(bins, store)
                self.live[i] -= 1

    def stores(self, aggs: list[Agg]) -> tuple[list[int], list[int]]:
        """``merge_bins(aggs)``, ``aggs`` being the aggregates held (read only for a sign of
        which at most one of them has bins: ``merge_bins`` returns that store as it is)."""
        out = []
        for i, bins in enumerate((self.pos, self.neg)):
            live = self.live[i]
            out.append(_store_from(bins) if live >= 2 else [] if not live
                       else _merge_many([_stores(a)[i] for a in aggs]))
        return out[0], out[1]


_COUNT_OF, _SUM_OF, _MIN_OF, _MAX_OF, _ZEROS_OF = map(itemgetter, (COUNT, SUM, MIN, MAX, ZEROS))


def merge_with_bins(aggs: list[Agg], pos: list[int], neg: list[int]) -> Agg:
    """``merge_all(aggs)`` of two or more aggregates whose merged bins are already known
    (``merge_bins``): count, sum, min, max and zeros are folded here in the same order, so
    the result is the same, bit for bit."""
    # left folds in C: reduce adds from the first sum on (as ``merge`` does, pairwise); min
    # and max keep the first of equal values, as ``min(lo, x)`` does
    return [sum(map(_COUNT_OF, aggs)), reduce(add, map(_SUM_OF, aggs)),
            min(map(_MIN_OF, aggs)), max(map(_MAX_OF, aggs)), sum(map(_ZEROS_OF, aggs)),
            pos, neg]


def migrate(agg: Agg) -> Agg:
    """The aggregate in the sparse format (itself if it already is)."""
    if len(agg) != _LEGACY_LENGTH:
        return agg
    pos, neg = _stores(agg)
    return [agg[COUNT], agg[SUM], agg[MIN], agg[MAX], agg[ZEROS], pos, neg]


def load(obj: Any) -> Agg:
    """Validate an aggregate from outside (a restored export, either format) and return it in
    the sparse format; raises ValueError naming what is wrong."""
    if not isinstance(obj, list) or len(obj) not in (_LENGTH, _LEGACY_LENGTH):
        raise ValueError(f"a sketch is a list of {_LENGTH} (or {_LEGACY_LENGTH}) items")
    count, total, lo, hi, zeros = obj[:5]
    if not all(_is_int(x) and x >= 0 for x in (count, zeros)):
        raise ValueError("sketch count and zeros must be non-negative integers")
    if not all(_is_number(x) for x in (total, lo, hi)):
        raise ValueError("sketch sum, min and max must be numbers")
    if len(obj) == _LEGACY_LENGTH:
        for off, dense in ((obj[5], obj[6]), (obj[7], obj[8])):
            if not _is_int(off) or not isinstance(dense, list) or not all(
                    _is_int(c) and c >= 0 for c in dense):
                raise ValueError("legacy sketch bins must be an integer offset and counts")
        agg = migrate(obj)
    else:
        agg = list(obj)
    stores, in_bins = [], 0
    for store in (agg[POS], agg[NEG]):
        if not isinstance(store, list) or not all(_is_int(x) for x in store) or (
                store and (len(store) < 2 or store[-1] < 0)):
            raise ValueError("sketch bins must be a list of integers: a key, then tokens")
        keys, counts = _decode(store)
        if keys and keys[-1] - keys[0] >= MAX_BINS:
            raise ValueError(f"sketch bins span more than {MAX_BINS} keys")
        stores.append(_encode(keys, counts))  # the canonical form, so merges compare equal
        in_bins += sum(counts)
    if in_bins + zeros != count:
        raise ValueError("sketch bin counts and zeros do not add up to its count")
    if count and not lo <= hi:
        raise ValueError("sketch min is above its max")
    return [count, total, lo, hi, zeros, stores[0], stores[1]]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# --- reading ------------------------------------------------------------------------------------


def bins(agg: Agg) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The non-empty bins ``(key, count)`` of each sign, keys ascending: (positive, negative)."""
    pos, neg = (list(zip(*_decode(s), strict=True)) for s in _stores(agg))
    return pos, neg


def is_agg(obj: Any) -> bool:
    """Whether ``obj`` has the shape of an aggregate (either format)."""
    if not isinstance(obj, list):
        return False
    if len(obj) == _LENGTH:
        return isinstance(obj[POS], list) and isinstance(obj[NEG], list)
    return len(obj) == _LEGACY_LENGTH and isinstance(obj[_LEGACY_POS_BINS], list) and \
        isinstance(obj[_LEGACY_NEG_BINS], list)


def bin_count(agg: Agg) -> int:
    """Number of non-empty bins stored (both signs)."""
    return sum(sum(1 for t in islice(s, 1, None) if t >= 0) for s in _stores(agg))


def nearest_rank(q: float, count: int) -> int:
    """1-based rank of the nearest-rank q-quantile of ``count`` values: ``ceil(q * count)``
    computed exactly for the float ``q`` (integer arithmetic), within ``1..count``."""
    num, den = q.as_integer_ratio()
    return min(count, max(1, -(-num * count // den)))


def quantile(agg: Agg, q: float) -> float | None:
    """Estimated nearest-rank q-quantile (0 <= q <= 1), clamped to the exact min and max."""
    return quantiles(agg, (q,))[0]


def quantiles(agg: Agg, qs: Sequence[float]) -> list[float | None]:
    """``[quantile(agg, q) for q in qs]`` in one walk over the bins (``qs`` ascending; else
    one walk per q)."""
    if any(a > b for a, b in pairwise(qs)):
        return [quantile(agg, q) for q in qs]
    count = agg[COUNT]
    if count <= 0:
        return [None] * len(qs)
    out: list[float | None] = [float(agg[MIN]) if q <= 0 else float(agg[MAX]) for q in qs]
    wanted = [(i, nearest_rank(q, count)) for i, q in enumerate(qs) if 0 < q < 1]
    if not wanted:
        return out
    n = len(wanted)
    j, seen, need = 0, 0, wanted[0][1]  # wanted[j]: the next rank to reach (ranks ascend)
    pos, neg = _stores(agg)
    if neg:
        keys, counts = _decode(neg)
        for i in range(len(keys) - 1, -1, -1):  # most negative first
            seen += counts[i]
            if seen >= need:
                while j < n and seen >= wanted[j][1]:
                    out[wanted[j][0]] = _clamp(-bin_value(keys[i]), agg)
                    j += 1
                if j == n:
                    return out
                need = wanted[j][1]
    seen += agg[ZEROS]
    while j < n and seen >= wanted[j][1]:
        out[wanted[j][0]] = _clamp(0.0, agg)
        j += 1
    if pos and j < n:
        need = wanted[j][1]
        k = pos[0] - 1
        for t in islice(pos, 1, None):
            if t < 0:
                k -= t
                continue
            k += (t & _GAP_MASK) + 1
            seen += (t >> _GAP_BITS) + 1
            if seen >= need:
                while j < n and seen >= wanted[j][1]:
                    out[wanted[j][0]] = _clamp(bin_value(k), agg)
                    j += 1
                if j == n:
                    break
                need = wanted[j][1]
    return out  # ranks never reached keep float(max), as in ``quantile``


def _clamp(value: float, agg: Agg) -> float:
    return float(min(max(value, agg[MIN]), agg[MAX]))


def mean(agg: Agg) -> float | None:
    return agg[SUM] / agg[COUNT] if agg[COUNT] else None
