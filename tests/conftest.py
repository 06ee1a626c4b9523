"""Fixtures shared by every test: a database URL per backend.

PostgreSQL runs when ``BGA_TEST_POSTGRES_URL`` names a server (``.ci/run`` sets it): each test
gets a fresh schema of that database, dropped afterwards. Redis runs when ``BGA_TEST_REDIS_URL``
names one (``redis://127.0.0.1:6379/0``; ``.ci/run`` sets it): each test gets a key prefix of
its own (``?prefix=``), whose keys are deleted afterwards. Without the variable those tests
skip; in CI (``CI=true`` or ``BGA_CI=1``) a missing or unreachable server fails them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import quote

import pytest

BACKENDS = ["sqlite", "memory", "postgres", "redis"]
POSTGRES_ENV = "BGA_TEST_POSTGRES_URL"
POSTGRES_MISSING = f"PostgreSQL tests need {POSTGRES_ENV}; .ci/run sets it"
REDIS_ENV = "BGA_TEST_REDIS_URL"
REDIS_MISSING = f"Redis tests need {REDIS_ENV} (e.g. redis://127.0.0.1:6379/0); .ci/run sets it"


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


def service_base(env: str, missing: str, what: str) -> str:
    """The server URL a service test needs (from ``env``): skips without it, saying why;
    fails instead of skipping in CI, where every service test is required."""
    base = os.environ.get(env, "").strip()
    if not base:
        if in_ci():
            pytest.fail(f"{env} is not set, but CI requires the {what} tests")
        pytest.skip(missing)
    return base


def service_unreachable(what: str, env: str, exc: BaseException) -> NoReturn:
    """Skip (fail in CI) a test whose server does not answer."""
    message = f"{what} at {env} is unreachable: {exc}"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """URL of a fresh, empty schema on the test server, dropped on exit.

    Skips without ``BGA_TEST_POSTGRES_URL``; fails instead of skipping in CI."""
    base = service_base(POSTGRES_ENV, POSTGRES_MISSING, "PostgreSQL")
    import psycopg

    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        service_unreachable("PostgreSQL", POSTGRES_ENV, exc)
    schema = f"bga_t_{uuid.uuid4().hex[:16]}"
    try:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_schema(base, schema)
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()


@contextlib.contextmanager
def redis_prefix() -> Iterator[str]:
    """URL of a fresh key prefix on the test Redis server, its keys deleted on exit.

    Skips without ``BGA_TEST_REDIS_URL``; fails instead of skipping in CI."""
    base = service_base(REDIS_ENV, REDIS_MISSING, "Redis")
    import redis

    from state.backends.url import parse_url

    admin = redis.Redis.from_url(base.split("?", 1)[0], socket_connect_timeout=10)
    try:
        admin.ping()
    except (redis.RedisError, OSError) as exc:
        admin.close()
        service_unreachable("Redis", REDIS_ENV, exc)
    url = f"{base.split('?', 1)[0]}?prefix=t{uuid.uuid4().hex[:16]}"
    try:
        yield url
    finally:
        with contextlib.suppress(redis.RedisError, OSError):
            keys = list(admin.scan_iter(match=parse_url(url).key_prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                admin.unlink(*keys[i:i + 500])
        admin.close()


@contextlib.contextmanager
def server_url(kind: str) -> Iterator[str]:
    """A fresh database on a server backend (``postgres`` schema or ``redis`` prefix)."""
    with postgres_schema() if kind == "postgres" else redis_prefix() as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each backend; a test marked ``needs_sql(reason)`` (the
    importer's tables) skips Redis, saying why."""
    needs_sql = request.node.get_closest_marker("needs_sql")
    if request.param == "redis" and needs_sql is not None:
        pytest.skip(f"not on Redis: {needs_sql.args[0]}")
    if request.param in ("postgres", "redis"):
        with server_url(request.param) as url:
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


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A fresh Redis key prefix (for tests that need several OS processes)."""
    with redis_prefix() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def process_db_url(request: pytest.FixtureRequest) -> str:
    """A fresh SQL database that several OS processes can share: a SQLite file
    (``sqlite_url``) or a PostgreSQL schema (``postgres_url``, which skips without a server).
    Request it before the fixtures that start processes, so that the database outlives them."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("redis", marks=pytest.mark.redis)])
def shared_db_url(request: pytest.FixtureRequest) -> str:
    """``process_db_url`` or a Redis key prefix (``redis_url``, which skips without a
    server): for the multi-process tests of the state itself (crash, scheduler, failover),
    which need no SQL table of the importer."""
    return request.getfixturevalue(f"{request.param}_url")


TEST_AGENT_CLASSES = "tests.agents.example:*,tests.bridge.test_local_traces:LLMAgent"


@pytest.fixture(autouse=True)
def operator_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator allow-lists the test agents (``state.policy``): shared config may name
    them in ``agents.<id>.class``; subprocesses inherit the setting."""
    monkeypatch.setenv("BGA_AGENT_CLASSES", TEST_AGENT_CLASSES)
