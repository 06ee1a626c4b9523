"""Fixtures shared by every test: a database URL per backend.

PostgreSQL runs when ``BGA_TEST_POSTGRES_URL`` names a server (``.ci/run`` sets it): each test
gets a fresh schema of that database, dropped afterwards. Without the variable those tests
skip; in CI (``CI=true`` or ``BGA_CI=1``) a missing or unreachable server fails them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

BACKENDS = ["sqlite", "memory", "postgres"]
POSTGRES_ENV = "BGA_TEST_POSTGRES_URL"
POSTGRES_MISSING = f"PostgreSQL tests need {POSTGRES_ENV}; .ci/run sets it"


def make_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return f"memory://{uuid.uuid4().hex}"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("BGA_CI") == "1"


def with_schema(base: str, schema: str) -> str:
    """``base`` with its search_path set to ``schema`` (the saver's tables land there)."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """URL of a fresh, empty schema on the test server, dropped on exit.

    Skips without ``BGA_TEST_POSTGRES_URL``; fails instead of skipping in CI."""
    base = os.environ.get(POSTGRES_ENV, "").strip()
    if not base:
        if in_ci():
            pytest.fail(f"{POSTGRES_ENV} is not set, but CI requires the PostgreSQL tests")
        pytest.skip(POSTGRES_MISSING)
    import psycopg

    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {POSTGRES_ENV} is unreachable: {exc}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    schema = f"bga_t_{uuid.uuid4().hex[:16]}"
    try:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_schema(base, schema)
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend."""
    if request.param == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        yield make_url(request.param, tmp_path)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file (for tests that need several OS processes)."""
    return make_url("sqlite", tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (for tests that need several OS processes)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def process_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh database that several OS processes can share: a SQLite file (``sqlite_url``)
    or a PostgreSQL schema (``postgres_url``, which skips without a server). Request it before
    the fixtures that start processes, so that the database outlives them."""
    return request.getfixturevalue(f"{request.param}_url")


TEST_AGENT_CLASSES = "tests.agents.example:*,tests.bridge.test_local_traces:LLMAgent"


@pytest.fixture(autouse=True)
def operator_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator allow-lists the test agents (``state.policy``): shared config may name
    them in ``agents.<id>.class``; subprocesses inherit the setting."""
    monkeypatch.setenv("BGA_AGENT_CLASSES", TEST_AGENT_CLASSES)
