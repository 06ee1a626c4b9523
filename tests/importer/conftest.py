"""Fixtures of the importer tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_url, postgres_schema


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database that other processes can open too (``db_url`` minus memory://)."""
    if request.param == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        yield make_url("sqlite", tmp_path)
