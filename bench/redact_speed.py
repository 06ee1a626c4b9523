"""Redaction cost per string (it runs on every string of every write), next to floors.

Floors measured in the same run: one precompiled ``re.search`` of a short literal (the least
any scan costs) and building a ``PerformanceMetric`` (the validation every metric pays anyway).

    .venv/bin/python bench/redact_speed.py
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable

from _common import machine, print_table

from state.models import PerformanceMetric
from state.redact import redact

SAMPLES: dict[str, str] = {
    "name (no trigger)": "batch_latency_ms",
    "agent id (no trigger)": "profile_import",
    "error message": "bad email 'x@' on line 12 of file data.csv",
    "log line with key=value": "retrying request_id=7f3a status=503 after 2.5 s",
    "message with a LangSmith key": "auth failed for lsv2_pt_0123456789abcdef0123456789abcdef_01",
    "DSN with a password": "cannot connect to postgresql://app:s3cret@db:5432/app",
}
LITERAL = re.compile("zz")


def per_call_us(fn: Callable[[], object], seconds: float = 0.3) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(200):
            fn()
        n += 200
    return elapsed / n * 1e6


def main() -> None:
    rows = []
    for label, text in SAMPLES.items():
        rows.append((label, len(text), per_call_us(functools.partial(redact, text)),
                     per_call_us(functools.partial(LITERAL.search, text))))
    metric = per_call_us(lambda: PerformanceMetric(source_agent="importer",
                                                   name="batch_latency_ms", value=1.0))
    print_table(f"redact() per string ({machine()})",
                ["string", "chars", "redact µs", "floor: re.search µs"], rows,
                notes=[f"one PerformanceMetric (3 names redacted inside): {metric:.1f} µs"])


if __name__ == "__main__":
    main()
