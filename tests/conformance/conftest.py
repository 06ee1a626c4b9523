"""Fixtures of the checkpoint tests: a fresh database of each backend whose saver is ours."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from state.backends import Backend, make_backend
from tests.conftest import make_url, server_url

SAVER_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                  pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=SAVER_BACKENDS)
def saver_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database of each backend with a compare-and-swap saver (SQLite, PostgreSQL,
    Redis)."""
    if request.param in ("postgres", "redis"):
        with server_url(request.param) as url:
            yield url
    else:
        yield make_url("sqlite", tmp_path)


@pytest.fixture
async def backend(saver_url: str) -> AsyncIterator[Backend]:
    backend = make_backend(saver_url)
    await backend.setup()
    try:
        yield backend
    finally:
        await backend.aclose()
