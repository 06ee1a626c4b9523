"""LangGraph's checkpointer conformance suite (langgraph-checkpoint-conformance) on our savers.

Each backend's saver must pass every capability the suite knows, base and extended: put,
put_writes, get_tuple, list, delete_thread, delete_for_runs, copy_thread, prune. The suite's
threads are ordinary ones (random UUIDs), so it also proves that compare-and-swap stays off
them. ``memory://`` runs LangGraph's own InMemorySaver: checked too, for what it implements.
Run with ``-s`` to see the suite's report.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.memory import InMemorySaver

from state.backends import make_backend
from state.backends.history import LinearThreads
from tests.conftest import make_url, server_url


async def run_suite(url: str) -> tuple[CapabilityReport, BaseCheckpointSaver]:
    """The suite against fresh savers on ``url`` (one per capability, one database)."""
    seen: list[BaseCheckpointSaver] = []

    @checkpointer_test(name=f"{url.split(':', 1)[0]} saver")
    async def factory() -> AsyncIterator[BaseCheckpointSaver]:
        backend = make_backend(url)
        await backend.setup()
        try:
            seen.append(backend.checkpointer)
            yield backend.checkpointer
        finally:
            await backend.aclose()

    report = await validate(factory)
    report.print_report()
    for name, result in sorted(report.results.items()):
        state = "not implemented" if not result.detected else \
            f"{result.tests_passed} passed, {result.tests_failed} failed"
        print(f"  {report.checkpointer_name} / {name}: {state}")
    return report, seen[0]


def failures(report: CapabilityReport) -> list[str]:
    return [f"{name}: {failure}" for name, result in report.results.items()
            for failure in result.failures]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                                  pytest.param("redis", marks=pytest.mark.redis)])
async def test_our_savers_pass_every_capability_of_the_suite(kind: str, tmp_path: Path) -> None:
    if kind in ("postgres", "redis"):
        with server_url(kind) as url:
            report, saver = await run_suite(url)
    else:
        report, saver = await run_suite(make_url(kind, tmp_path))
    assert isinstance(saver, LinearThreads)
    detected = {name for name, result in report.results.items() if result.detected}
    assert detected == {c.value for c in ALL_CAPABILITIES}, report.to_dict()
    assert failures(report) == []
    assert report.passed_all() and report.conformance_level() == "FULL"
    assert sum(r.tests_passed for r in report.results.values()) > 50  # the suite really ran


async def test_the_memory_backend_runs_langgraphs_own_saver_and_passes_what_it_implements(
) -> None:
    report, saver = await run_suite(f"memory://{uuid.uuid4().hex}")
    assert type(saver) is InMemorySaver
    assert failures(report) == []
    assert report.passed_all_base()
