"""The profiles database itself: where it lives per backend, and a set-up that many processes
can race on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nodes.profile_import.store import ProfileStore, profiles_location
from state.backends.migrations import PROFILES, SchemaNotReady
from state.backends.syncdb import PostgresSyncDb, open_profiles
from tests.threads import at_once


def test_locations_per_backend() -> None:
    assert profiles_location("sqlite:///./data/state.db") == "data/state.profiles.db"
    assert profiles_location("memory://x").startswith("file:bga-profiles-x?")
    pg = "postgresql://u:secret@db:5432/bga?options=-csearch_path%3Dteam"
    assert profiles_location(pg) == pg  # the same database and schema as the state
    with pytest.raises(ValueError, match="postgresql://"):
        profiles_location("mysql://db/x")


def test_connection_errors_name_the_server_but_never_the_password() -> None:
    with pytest.raises(ConnectionError) as err:  # nothing listens on port 1
        PostgresSyncDb("postgresql://u:s3cret@127.0.0.1:1/bga")
    assert "127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)


def test_concurrent_first_opens_set_up_the_schema_once(process_db_url: str) -> None:
    """Eight connections open a fresh database at the same moment: none fails, the
    migrations are recorded once, and the tables work."""
    location = profiles_location(process_db_url)
    stores, errors = at_once(lambda: ProfileStore.open(location))
    try:
        assert errors == [] and len(stores) == 8
        versions = [r["version"] for r in stores[0].db.all(
            "SELECT version FROM bga_profile_migrations ORDER BY version")]
        assert versions == list(range(1, PROFILES.latest(stores[0].db.dialect) + 1))
        assert stores[-1].count_profiles() == 0 and stores[-1].jobs() == []
    finally:
        for store in stores:
            store.close()


def test_postgres_tables_live_in_the_connections_schema(postgres_url: str) -> None:
    """Same table names as SQLite, in the state's schema, with 64-bit integers and doubles
    (file sizes, offsets and nanosecond mtimes overflow INTEGER; REAL would round times)."""
    store = ProfileStore.open(profiles_location(postgres_url))
    try:
        assert isinstance(store.db, PostgresSyncDb)
        assert store.db.schema.startswith("bga_t_") and store.db.schema in postgres_url
        rows = store.db.all(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema()")
        types = {(r["table_name"], r["column_name"]): r["data_type"] for r in rows}
        assert {t for t, _ in types} == {"profiles", "import_jobs", "quarantine",
                                         "processed_files", "bga_profile_migrations"}
        assert types["import_jobs", "mtime_ns"] == types["import_jobs", "byte_offset"] == \
            types["profiles", "id"] == "bigint"
        assert types["import_jobs", "started_at"] == "double precision"
        assert types["profiles", "source_updated_at"] == "double precision"
    finally:
        store.close()


def test_an_open_without_create_migrates_nothing_and_says_what_is_missing(
        process_db_url: str, tmp_path: Path) -> None:
    """``create=False`` (read-only tools) never migrates: a file with no profiles schema and
    a database behind on its migrations are refused with a clear error, and stay as they
    were."""
    empty = tmp_path / "empty.profiles.db"
    sqlite3.connect(empty).close()  # a database file, but not a profiles database
    with pytest.raises(SchemaNotReady, match=r"no profiles database at .*nothing was imported"):
        ProfileStore.open(str(empty), create=False)
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    location = profiles_location(process_db_url)
    ProfileStore.open(location).close()
    store = ProfileStore.open(location)
    latest = PROFILES.latest(store.db.dialect)
    with store.db.write():
        store.db.run("DELETE FROM bga_profile_migrations WHERE version=?", (latest,))
    store.close()
    with pytest.raises(SchemaNotReady, match=f"lacks migration\\(s\\) {latest} of {latest}"):
        ProfileStore.open(location, create=False)
    db = open_profiles(location)
    try:
        versions = [r["version"] for r in db.all("SELECT version FROM bga_profile_migrations")]
        assert latest not in versions  # the refused open applied nothing
    finally:
        db.close()
