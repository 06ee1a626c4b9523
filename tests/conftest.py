"""Fixtures shared by every test: a database URL per backend."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

BACKENDS = ["sqlite", "memory"]


def make_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return f"memory://{uuid.uuid4().hex}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each backend."""
    return make_url(request.param, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file (for tests that need several OS processes)."""
    return make_url("sqlite", tmp_path)
