"""Racing openers: one callable run by several threads released at the same moment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def at_once(fn: Callable[[], T], n: int = 8, *, timeout_s: float = 120
            ) -> tuple[list[T], list[BaseException]]:
    """Run ``fn`` in ``n`` threads that start together (a barrier); what they returned and
    what they raised."""
    start = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait()
        try:
            result = fn()
        except BaseException as exc:  # handed to the caller
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout_s)
    return results, errors
