"""Quantile accuracy of ``state.sketch`` against exact values and DataDog's ``ddsketch``.

For each distribution (uniform, lognormal sigma 1 and 2, bimodal, 0.1 % outliers at 1000x,
log-uniform 1e-3..1e6, and the 1,000-value timeout case of issue 11) draws N values (default
1M; numpy when installed), and prints p50 / p95 / p99: the exact nearest-rank value, ours,
ddsketch's (the same relative accuracy, unbounded store), both relative errors, and the size of
each sketch: non-empty bins and msgpack bytes (ours as checkpointed; ddsketch's protobuf when
``protobuf`` is installed). A second table times ``add`` per value, a merge of two halves and
one quantile, ours next to ddsketch's.

    .venv/bin/python bench/sketch_accuracy.py
    .venv/bin/python bench/sketch_accuracy.py --n 100k --plain
"""

from __future__ import annotations

import functools
import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import ormsgpack
from _common import int_list, machine, parser, print_table

from state import sketch

try:
    from ddsketch import DDSketch
except ImportError:  # pragma: no cover - a test dependency; the table then has no peer
    DDSketch = None  # type: ignore[misc, assignment]  # optional: None when not installed

try:
    import numpy as np
except ImportError:  # pragma: no cover - pure python fallback
    np = None  # type: ignore[assignment]  # optional: None when not installed

QS = (0.5, 0.95, 0.99)


def draw(name: str, n: int, seed: int) -> list[float]:
    """``n`` values of a named distribution."""
    if name == "timeout case (issue 11)":
        return [40 + 20 * i / 998 for i in range(999)] + [60_000.0]
    if np is not None:
        g = np.random.default_rng(seed)
        if name == "uniform 0..1000":
            v = g.uniform(0, 1000, n)
        elif name == "lognormal sigma 1":
            v = g.lognormal(math.log(100), 1.0, n)
        elif name == "lognormal sigma 2":
            v = g.lognormal(math.log(100), 2.0, n)
        elif name == "bimodal 50 / 2000 ms":
            v = np.where(g.random(n) < 0.7, np.abs(g.normal(50, 5, n)),
                         np.abs(g.normal(2000, 200, n)))
        elif name == "0.1 % outliers at 1000x":
            v = g.lognormal(math.log(50), 0.2, n)
            v = np.where(g.random(n) < 0.001, v * 1000, v)
        else:
            v = 10 ** g.uniform(-3, 6, n)
        return v.tolist()
    r = random.Random(seed)
    gens: dict[str, Callable[[], float]] = {
        "uniform 0..1000": lambda: r.uniform(0, 1000),
        "lognormal sigma 1": lambda: r.lognormvariate(math.log(100), 1.0),
        "lognormal sigma 2": lambda: r.lognormvariate(math.log(100), 2.0),
        "bimodal 50 / 2000 ms": lambda: abs(r.gauss(50, 5)) if r.random() < 0.7
        else abs(r.gauss(2000, 200)),
        "0.1 % outliers at 1000x": lambda: r.lognormvariate(math.log(50), 0.2)
        * (1000 if r.random() < 0.001 else 1),
        "log-uniform 1e-3..1e6": lambda: 10 ** r.uniform(-3, 6),
    }
    return [gens[name]() for _ in range(n)]


DISTRIBUTIONS = ("uniform 0..1000", "lognormal sigma 1", "lognormal sigma 2",
                 "bimodal 50 / 2000 ms", "0.1 % outliers at 1000x", "log-uniform 1e-3..1e6",
                 "timeout case (issue 11)")


def exact(ordered: list[float], q: float) -> float:
    """Nearest-rank q-quantile of sorted values (ours is defined on it)."""
    return ordered[sketch.nearest_rank(q, len(ordered)) - 1]


def lower_rank(ordered: list[float], q: float) -> float:
    """ddsketch's rank definition: the element of rank floor(q * (n - 1))."""
    return ordered[math.floor(q * (len(ordered) - 1))]


def rel(est: float | None, want: float) -> float:
    return abs(est - want) / abs(want) if est is not None and want else float("nan")


def dd_bytes(dd: Any) -> int | None:
    try:
        from ddsketch.pb.proto import DDSketchProto
    except ImportError:
        return None
    return len(DDSketchProto.to_proto(dd).SerializeToString())


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run(args: Any) -> None:
    acc_rows: list[list[Any]] = []
    speed_rows: list[list[Any]] = []
    worst = {"ours": 0.0, "ddsketch": 0.0}
    for i, name in enumerate(DISTRIBUTIONS):
        t0 = time.perf_counter()
        values = draw(name, args.n, args.seed + i)
        ordered = sorted(values)
        n = len(values)
        t_ours, agg = timed(functools.partial(sketch.from_values, values), 1)
        dd = None
        t_dd = math.nan
        if DDSketch is not None:
            def build(v: list[float] = values) -> Any:
                d = DDSketch(relative_accuracy=sketch.RELATIVE_ACCURACY)
                add = d.add
                for x in v:
                    add(x)
                return d
            t_dd, dd = timed(build, 1)
        size = len(ormsgpack.packb(agg))
        for q in QS:
            want = exact(ordered, q)
            ours = sketch.quantile(agg, q)
            theirs = dd.get_quantile_value(q) if dd is not None else None
            e_ours = rel(ours, want)
            e_dd = rel(theirs, lower_rank(ordered, q))
            worst["ours"] = max(worst["ours"], e_ours)
            if not math.isnan(e_dd):
                worst["ddsketch"] = max(worst["ddsketch"], e_dd)
            acc_rows.append([name if q == QS[0] else "", f"{n:,}" if q == QS[0] else "",
                             f"p{round(q * 100)}", want, ours, theirs,
                             f"{100 * e_ours:.2f} %",
                             "—" if math.isnan(e_dd) else f"{100 * e_dd:.2f} %",
                             sketch.bin_count(agg) if q == QS[0] else "",
                             size if q == QS[0] else "",
                             (dd_bytes(dd) if dd is not None else None) if q == QS[0] else ""])
        half = n // 2
        a, b = sketch.from_values(values[:half]), sketch.from_values(values[half:])
        t_merge, _ = timed(functools.partial(sketch.merge, a, b), 5)
        t_q, _ = timed(functools.partial(sketch.quantile, agg, 0.99), 5)
        dd_merge = dd_q = math.nan
        if dd is not None:
            dd_a, dd_b = build(values[:half]), build(values[half:])

            def dd_merge_fn(dd_a: Any = dd_a, dd_b: Any = dd_b) -> Any:
                x = DDSketch(relative_accuracy=sketch.RELATIVE_ACCURACY)  # a new one, as ours
                x.merge(dd_a)
                x.merge(dd_b)
                return x
            dd_merge, _ = timed(dd_merge_fn, 5)
            dd_q, _ = timed(functools.partial(dd.get_quantile_value, 0.99), 5)
        speed_rows.append([name, f"{n:,}", 1e9 * t_ours / n, 1e9 * t_dd / n,
                           1e6 * t_merge, 1e6 * dd_merge, 1e6 * t_q, 1e6 * dd_q])
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    peer = "ddsketch" if DDSketch is not None else "ddsketch (not installed)"
    print_table(
        f"Quantile accuracy, relative accuracy {sketch.RELATIVE_ACCURACY:.0%}, bin limit "
        f"{sketch.MAX_BINS:,} per sign ({machine()})",
        ["distribution", "values", "q", "exact", "ours", peer, "our err", "dd err", "our bins",
         "our bytes", "dd bytes"],
        acc_rows, plain=args.plain,
        notes=[f"exact = nearest-rank value (ours is defined on it); ddsketch's error is against "
               f"its own rank floor(q*(n-1)). Worst error: ours {100 * worst['ours']:.2f} %, "
               f"ddsketch {100 * worst['ddsketch']:.2f} % (guarantee: "
               f"{100 * sketch.RELATIVE_ACCURACY:.0f} %).",
               "our bytes = msgpack of the aggregate as checkpointed (count, sum, min, max, "
               "zeros, sparse bins); dd bytes = ddsketch's protobuf (— without protobuf).",
               "values from numpy" if np is not None else "values from random (no numpy)"])
    print_table(
        "Sketch speed, ours next to ddsketch (pure python both)",
        ["distribution", "values", "add ns/value", "dd add ns/value", "merge 2 halves us",
         "dd merge us", "p99 us", "dd p99 us"],
        speed_rows, plain=args.plain,
        notes=["add = building the sketch value by value (ours: state.sketch.Accumulator, the "
               "fold's builder); merge and p99: best of 5."])


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=lambda s: int_list(s)[0], default=1_000_000,
                   help="values per distribution (k / M suffixes allowed)")
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
