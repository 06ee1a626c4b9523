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


# The trace store (state/traces.py) and the importer's profiles database are SQLite or memory
# only for now (issue 7): these tests, and any marked ``local_stores``, skip on PostgreSQL.
LOCAL_STORE_DIRS = ("bridge", "importer")
LOCAL_STORES_MISSING = ("the trace store and the profiles database do not run on PostgreSQL "
                        "yet (issue 7)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests_dir = Path(__file__).parent
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("db_url") != "postgres":
            continue
        parts = item.path.relative_to(tests_dir).parts if item.path.is_relative_to(
            tests_dir) else ()
        if item.get_closest_marker("local_stores") or (parts and parts[0] in LOCAL_STORE_DIRS):
            item.add_marker(pytest.mark.skip(reason=LOCAL_STORES_MISSING))


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
