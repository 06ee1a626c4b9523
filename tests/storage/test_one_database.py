"""One database object per URL: one URL parser, one migration runner owning every table,
stores handed out by the backend, databases made by the old code migrating, and read-only
opens that write nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from nodes.profile_import.store import ProfileStore, profiles_location
from state import SharedState
from state.backends import SchemaNotReady, make_backend, parse_url
from state.backends.migrations import PROFILES, STATE
from state.backends.syncdb import lock_key
from state.backends.url import is_postgres, sqlite_path
from state.traces import open_store
from tests.storage.old_layout import old_profiles, old_state
from tests.threads import at_once

ROOT = Path(__file__).resolve().parents[2]

STORAGE_MODULES = [
    "state.traces", "state.backends", "state.backends.url", "state.backends.migrations",
    "state.backends.syncdb", "state.backends.traces", "state.backends.base",
    "state.backends.sqlite", "state.backends.postgres", "state.backends.memory",
    "state.api", "state.settings", "nodes.profile_import.store", "state.outbox",
    "state.backends.outbox", "state.backends.aiodb", "state.backends.redisdb",
]


@pytest.mark.parametrize("module", STORAGE_MODULES)
def test_each_storage_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """An import cycle shows when the cycle is entered from the wrong module: each one is
    imported first, alone."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_urls_map_to_one_dialect_each() -> None:
    assert parse_url("sqlite:///a/b.db").dialect == "sqlite"
    assert parse_url("sqlite:///a/b.db").path == Path("a/b.db")
    assert parse_url("memory://x").name == "x"
    assert {parse_url(u).dialect for u in ("postgresql://h/d", "postgres://h/d")} == {"postgres"}
    with pytest.raises(ValueError, match="sqlite URL has no path"):
        parse_url("sqlite:///")
    with pytest.raises(ValueError, match="unsupported database URL") as err:
        parse_url("mysql://bob:hunter2-secret@h/d")
    assert "hunter2-secret" not in str(err.value)
    assert {parse_url(u).dialect for u in ("redis://h", "rediss://h:6380/2")} == {"redis"}
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_backend("mongodb://h")


def test_every_migration_is_a_list_of_single_statements() -> None:
    """No script is split on ``;`` by hand: each entry is its statements, or a data step."""
    for stream in (STATE, PROFILES):
        for dialect in ("sqlite", "postgres"):
            for migration in stream.of(dialect):
                assert bool(migration.statements) != bool(migration.data)
                assert all(";" not in s and s.strip() for s in migration.statements)


def _dialect(url: str) -> Literal["sqlite", "postgres"]:
    return "postgres" if is_postgres(url) else "sqlite"


def _versions(url: str, table: str) -> list[int]:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(parse_url(url).path) as conn:  # type: ignore[arg-type]
            return [v for (v,) in conn.execute(f"SELECT version FROM {table} ORDER BY version")]
    import psycopg

    with psycopg.connect(url) as conn:
        return [v for (v,) in conn.execute(f"SELECT version FROM {table} ORDER BY version")]


@pytest.mark.parametrize("upto", [2, 3, 4])
async def test_a_state_database_made_by_the_old_code_migrates(process_db_url: str,
                                                               upto: int) -> None:
    old_state(process_db_url, upto)
    async with SharedState.open(process_db_url, producer="tests") as shared:
        await shared.register_agent("a1", kind="test")
        await shared.flush()
        assert [a["agent_id"] for a in await shared.get_agents()] == ["a1"]
        rows = await shared.backend.traces().read_after(0, 10)
        assert [r["id"] for r in rows] == ["old-run"]  # the old rows are still there
    assert _versions(process_db_url, "bga_migrations") == list(
        range(1, STATE.latest(_dialect(process_db_url)) + 1))
    async with SharedState.open(process_db_url, producer="tests", read_only=True) as shared:
        assert [a["agent_id"] for a in await shared.get_agents()] == ["a1"]


@pytest.mark.parametrize("upto", [1, 2])
def test_a_profiles_database_made_by_the_old_code_migrates(process_db_url: str,
                                                           upto: int) -> None:
    location = profiles_location(process_db_url)
    old_profiles(location, upto)
    store = ProfileStore.open(location)
    try:
        assert store.profile("email:ada@example.com")["full_name"] == "Ada"  # type: ignore[index]
        assert store.jobs() == []
        versions = [r["version"] for r in store.db.all(
            "SELECT version FROM bga_profile_migrations ORDER BY version")]
        assert versions == list(range(1, PROFILES.latest(store.db.dialect) + 1))
        columns = {r["c"] for r in store.db.all(
            "SELECT column_name AS c FROM information_schema.columns WHERE "
            "table_schema = current_schema() AND table_name = 'import_jobs'"
            if store.db.dialect == "postgres" else
            "SELECT name AS c FROM pragma_table_info('import_jobs')")}
        assert {"record_lines", "blank_lines", "file_lines_lf", "file_lines_cr"} <= columns
    finally:
        store.close()


async def test_read_only_open_migrates_nothing_and_says_what_is_missing(
        process_db_url: str) -> None:
    old_state(process_db_url, 2)
    latest = STATE.latest(_dialect(process_db_url))
    missing = ", ".join(str(v) for v in range(3, latest + 1))
    with pytest.raises(SchemaNotReady,
                       match=rf"lacks migration\(s\) {missing} of {latest}.*bga db upgrade"):
        async with SharedState.open(process_db_url, producer="tests", read_only=True):
            pass
    assert _versions(process_db_url, "bga_migrations") == [1, 2]  # nothing was applied
    async with SharedState.open(process_db_url, producer="tests"):
        pass
    assert _versions(process_db_url, "bga_migrations") == list(range(1, latest + 1))


async def test_read_only_open_of_a_missing_database_creates_nothing(
        process_db_url: str) -> None:
    with pytest.raises(ValueError, match="no state database at"):
        async with SharedState.open(process_db_url, producer="tests", read_only=True):
            pass
    if process_db_url.startswith("sqlite:///"):
        assert not parse_url(process_db_url).path.exists()  # type: ignore[union-attr]
    else:
        import psycopg

        with psycopg.connect(process_db_url) as conn:
            row: Any = conn.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_schema = current_schema()").fetchone()
        assert row is not None and row[0] == 0


@contextmanager
def writer_holding_the_lock(url: str) -> Iterator[None]:
    """Another process's write in progress: SQLite's write lock (BEGIN IMMEDIATE), or on
    PostgreSQL the migration lock that every migrating open takes."""
    if url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(parse_url(url).path, isolation_level=None)  # type: ignore[arg-type]
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        (schema,) = conn.execute("SELECT current_schema()").fetchone()
        conn.execute("SELECT pg_advisory_lock(%s)", (lock_key(schema, "migrate"),))
        yield


async def test_read_only_open_takes_no_write_lock(process_db_url: str) -> None:
    """A read-only open and read go through while a writer holds the lock a migration needs
    (before, the open waited for it: 60 s on SQLite, forever on PostgreSQL)."""
    async with SharedState.open(process_db_url, producer="tests") as shared:
        await shared.register_agent("a1", kind="test")

    async def read_only() -> list[str]:
        async with SharedState.open(process_db_url, producer="tests", read_only=True,
                                    must_exist=True) as shared:
            return [a["agent_id"] for a in await shared.get_agents()]

    with writer_holding_the_lock(process_db_url):
        # the bound only keeps a regression from hanging the suite
        assert await asyncio.wait_for(read_only(), timeout=45) == ["a1"]


async def test_a_read_only_handle_refuses_flush_and_restore(db_url: str) -> None:
    async with SharedState.open(db_url, producer="tests") as shared:
        await shared.register_agent("a1", kind="test")  # pending: not folded yet
        document = await shared.export_state()
    async with SharedState.open(db_url, producer="tests", read_only=True) as reader:
        before = await reader.backend.latest_checkpoint_id(reader.thread_id)
        with pytest.raises(PermissionError, match=r"read-only: flush\(\)"):
            await reader.flush()
        with pytest.raises(PermissionError, match=r"read-only: restore_state\(\)"):
            await reader.restore_state(document, force=True)
        with pytest.raises(PermissionError, match="read-only: a write"):
            await reader.register_agent("a2", kind="test")
        assert await reader.backend.latest_checkpoint_id(reader.thread_id) == before
        assert await reader.backend.pending_count() == 1
        assert [a["agent_id"] for a in await reader.get_agents()] == ["a1"]


async def test_the_backend_hands_out_its_trace_store(db_url: str) -> None:
    """``Backend.traces()`` is the same tables as a store opened by URL."""
    row: dict[str, Any] = {"id": "r1", "trace_id": "t", "parent_run_id": None, "project": "local",
           "name": "tick", "run_type": "chain", "start_time": 1.0, "end_time": 2.0,
           "status": "success", "error": None, "tags": ["x"], "metadata": {},
           "prompt_tokens": None, "completion_tokens": None, "total_tokens": None,
           "total_cost": None, "first_token_time": None, "recorded_at": 3.0}
    async with SharedState.open(db_url, producer="tests") as shared:
        assert await shared.backend.traces().append([row]) == 1
        async with open_store(db_url) as store:
            assert [r["id"] for r in await store.read_after(0, 10)] == ["r1"]
            await store.append([{**row, "id": "r2"}])
        assert [r["id"] for r in await shared.backend.traces().read_after(0, 10)] == [
            "r1", "r2"]


def _alert(key: str, subject: str = "disk") -> dict[str, Any]:
    return {"key": key, "channel": "hook", "subject": subject, "event": "firing",
            "summary": f"alert {key}"}


async def test_the_backend_hands_out_its_alert_outbox(db_url: str) -> None:
    """``Backend.outbox()`` is the outbox of the backend's own database (tables, or Redis
    keys under its prefix), on its own connections: another handle on the same URL sees what
    one wrote, a message's members are fixed in one transaction, and the store's connections
    close with the backend."""
    async with SharedState.open(db_url, producer="tests") as shared:
        store = shared.backend.outbox()
        assert await store.enqueue([_alert("a1"), _alert("a2", "cpu\x00")], 10.0) == 2
        assert await store.enqueue([_alert("a1"), _alert("a3")], 11.0) == 1
        await store.make_message("m1", "hook", ["a1", "a2"], 12.0)
        async with SharedState.open(db_url, producer="other") as other:
            seen = other.backend.outbox()
            assert [a["key"] for a in await seen.unbatched("hook")] == ["a3"]
            assert [(m["key"], [a["key"] for a in m["alerts"]]) for m in await seen.due(12.0)
                    ] == [("m1", ["a1", "a2"])]
            await seen.record("m1", now=13.0, ok=True)
        assert await store.counts() == {"waiting": 1, "sent": 1}
        assert [e["key"] for e in (await store.history())[0]["events"]] == ["a1", "a2"]
    with pytest.raises(Exception, match=r"(?i)closed"):  # no connection of its own
        await store.counts()



def test_first_opens_of_a_new_sqlite_state_file_race_without_an_error(tmp_path: Path) -> None:
    """Eight openers of a new state file at once, twenty times: each sets the file up or
    finds it set up. (Setting WAL mode while another opener changes the journal mode is
    "database is locked" at once, without SQLite's busy handler: tried again until the
    lock timeout, ``state.backends.syncdb.file_pragma``.)"""
    for round_ in range(20):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"

        async def setup(url: str = url) -> None:
            backend = make_backend(url)
            try:
                await backend.setup()
            finally:
                await backend.aclose()

        _, errors = at_once(lambda setup=setup: asyncio.run(setup()))
        assert errors == [], f"round {round_}"
        with sqlite3.connect(sqlite_path(url)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            versions = [v for (v,) in conn.execute("SELECT version FROM bga_migrations")]
        assert sorted(versions) == list(range(1, STATE.latest("sqlite") + 1))
