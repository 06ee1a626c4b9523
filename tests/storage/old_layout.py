"""Databases as the code before the one-database-object change left them (frozen copies of
that code's migration scripts and of its runner, which split scripts on ``;``), so tests can
open them with today's code. Never edit these texts: they are what exists in the field."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

OLD_OUTBOX = """
CREATE TABLE IF NOT EXISTS bga_outbox (
    key TEXT PRIMARY KEY, channel TEXT NOT NULL, subject TEXT NOT NULL, event TEXT NOT NULL,
    created_at REAL NOT NULL, payload TEXT NOT NULL, message TEXT
);
CREATE INDEX IF NOT EXISTS bga_outbox_pending ON bga_outbox (channel, message, created_at);
CREATE INDEX IF NOT EXISTS bga_outbox_subject ON bga_outbox (channel, subject, created_at);
CREATE TABLE IF NOT EXISTS bga_alert_messages (
    key TEXT PRIMARY KEY, channel TEXT NOT NULL, created_at REAL NOT NULL,
    alerts INTEGER NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_at REAL NOT NULL, last_error TEXT, last_try_at REAL, sent_at REAL
);
CREATE INDEX IF NOT EXISTS bga_alert_messages_due ON bga_alert_messages (status, next_at)
"""

OLD_STATE_SQLITE = (
    """
    CREATE TABLE IF NOT EXISTS bga_streams (
        stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
        producer TEXT NOT NULL, host TEXT, pid INTEGER,
        opened_at REAL NOT NULL, closed_at REAL
    );
    CREATE TABLE IF NOT EXISTS bga_inbox (
        stream_id INTEGER NOT NULL, seq INTEGER NOT NULL,
        kind TEXT NOT NULL, payload BLOB NOT NULL,
        PRIMARY KEY (stream_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS bga_quarantine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stream_id INTEGER, seq INTEGER, kind TEXT, payload BLOB,
        reason TEXT NOT NULL, at REAL NOT NULL
    );
    """,
    """
CREATE TABLE IF NOT EXISTS bga_traces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL, trace_id TEXT, parent_run_id TEXT, project TEXT NOT NULL,
    name TEXT NOT NULL, run_type TEXT NOT NULL, start_time REAL NOT NULL, end_time REAL NOT NULL,
    status TEXT NOT NULL, error TEXT, tags TEXT, metadata TEXT,
    prompt_tokens REAL, completion_tokens REAL, total_tokens REAL, total_cost REAL,
    first_token_time REAL, recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS bga_trace_quarantine (
    source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, record TEXT,
    at REAL NOT NULL, PRIMARY KEY (source, key)
) WITHOUT ROWID
""",
    "ALTER TABLE bga_streams ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0",
    OLD_OUTBOX,
    """
CREATE TABLE IF NOT EXISTS bga_leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,
    flock INTEGER NOT NULL, expires_at REAL NOT NULL
)
""",
)

OLD_STATE_POSTGRES = (
    """
    CREATE TABLE IF NOT EXISTS bga_streams (
        stream_id BIGSERIAL PRIMARY KEY,
        producer TEXT NOT NULL, host TEXT, pid INTEGER,
        opened_at DOUBLE PRECISION NOT NULL, closed_at DOUBLE PRECISION
    );
    CREATE TABLE IF NOT EXISTS bga_inbox (
        stream_id BIGINT NOT NULL, seq BIGINT NOT NULL,
        kind TEXT NOT NULL, payload BYTEA NOT NULL,
        PRIMARY KEY (stream_id, seq)
    );
    CREATE TABLE IF NOT EXISTS bga_quarantine (
        id BIGSERIAL PRIMARY KEY,
        stream_id BIGINT, seq BIGINT, kind TEXT, payload BYTEA,
        reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL
    );
    """,
    """
CREATE TABLE IF NOT EXISTS bga_traces (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL, trace_id TEXT, parent_run_id TEXT, project TEXT NOT NULL,
    name TEXT NOT NULL, run_type TEXT NOT NULL,
    start_time DOUBLE PRECISION NOT NULL, end_time DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL, error TEXT, tags TEXT, metadata TEXT,
    prompt_tokens DOUBLE PRECISION, completion_tokens DOUBLE PRECISION,
    total_tokens DOUBLE PRECISION, total_cost DOUBLE PRECISION,
    first_token_time DOUBLE PRECISION, recorded_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS bga_trace_quarantine (
    source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, record TEXT,
    at DOUBLE PRECISION NOT NULL, PRIMARY KEY (source, key)
)
""",
    "ALTER TABLE bga_streams ADD COLUMN IF NOT EXISTS last_seq BIGINT NOT NULL DEFAULT 0",
    OLD_OUTBOX.replace(" REAL", " DOUBLE PRECISION").replace(" INTEGER", " BIGINT"),
)

OLD_PROFILES = (  # SQLite spelling; PostgreSQL got it through _PG_TYPES
    """
    CREATE TABLE IF NOT EXISTS profiles (
        id INTEGER PRIMARY KEY,
        identity TEXT NOT NULL UNIQUE,
        full_name TEXT, email TEXT, phone TEXT, company TEXT, title TEXT, location TEXT,
        profile_url TEXT, source TEXT, source_updated_at REAL,
        extra TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL, updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS import_jobs (
        job_id TEXT PRIMARY KEY,
        path TEXT NOT NULL, name TEXT NOT NULL,
        content_hash TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
        status TEXT NOT NULL,
        layout TEXT,
        byte_offset INTEGER NOT NULL DEFAULT 0,
        line_no INTEGER NOT NULL DEFAULT 0,
        batches INTEGER NOT NULL DEFAULT 0,
        rows_read INTEGER NOT NULL DEFAULT 0,
        inserted INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL DEFAULT 0,
        unchanged INTEGER NOT NULL DEFAULT 0,
        rejected INTEGER NOT NULL DEFAULT 0,
        reasons TEXT NOT NULL DEFAULT '{}',
        warnings TEXT NOT NULL DEFAULT '[]',
        error TEXT,
        forced INTEGER NOT NULL DEFAULT 0,
        duplicate_of TEXT,
        runs INTEGER NOT NULL DEFAULT 0,
        active_s REAL NOT NULL DEFAULT 0,
        started_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL
    );
    CREATE INDEX IF NOT EXISTS import_jobs_status ON import_jobs (status, content_hash);
    CREATE INDEX IF NOT EXISTS import_jobs_path ON import_jobs (path, size, mtime_ns);
    CREATE TABLE IF NOT EXISTS quarantine (
        id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL, line INTEGER NOT NULL,
        raw TEXT NOT NULL, reasons TEXT NOT NULL, codes TEXT NOT NULL, at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS quarantine_job ON quarantine (job_id, line);
    CREATE TABLE IF NOT EXISTS processed_files (
        content_hash TEXT PRIMARY KEY,
        job_id TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
        finished_at REAL NOT NULL
    );
    """,
    """
    ALTER TABLE import_jobs ADD COLUMN record_lines INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE import_jobs ADD COLUMN blank_lines INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE import_jobs ADD COLUMN file_lines_lf INTEGER;
    ALTER TABLE import_jobs ADD COLUMN file_lines_cr INTEGER;
    """,
)
OLD_PROFILES_TABLE = ("CREATE TABLE IF NOT EXISTS bga_profile_migrations "
                      "(version INTEGER NOT NULL PRIMARY KEY, applied_at REAL NOT NULL)")
_PG_TYPES = ((re.compile(r"\bid INTEGER PRIMARY KEY\b"),
              "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
             (re.compile(r"\bINTEGER\b"), "BIGINT"),
             (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"))


def _pg(script: str) -> str:
    for pattern, replacement in _PG_TYPES:
        script = pattern.sub(replacement, script)
    return script


def _same(script: str) -> str:
    return script


def _statements(script: str) -> list[str]:
    return [s for s in script.split(";") if s.strip()]  # how the old runner did it


def old_state(url: str, upto: int) -> None:
    """The state database's own tables at old version ``upto`` (no checkpoints yet, as
    if the process had died right after migrating), with one committed inbox stream
    holding one trace row."""
    if url.startswith("sqlite:///"):
        conn: Any = sqlite3.connect(Path(url[len("sqlite:///"):]), isolation_level=None)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        scripts, mark, table_ddl = OLD_STATE_SQLITE, "?", (
            "CREATE TABLE IF NOT EXISTS bga_migrations "
            "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
    else:
        import psycopg

        conn = psycopg.connect(url, autocommit=True)
        scripts, mark, table_ddl = OLD_STATE_POSTGRES, "%s", (
            "CREATE TABLE IF NOT EXISTS bga_migrations "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
    try:
        conn.execute(table_ddl)
        for version, script in enumerate(scripts[:upto], start=1):
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"INSERT INTO bga_migrations VALUES ({mark}, {mark})",
                         (version, time.time()))
        if upto >= 2:
            conn.execute(
                "INSERT INTO bga_traces (id, project, name, run_type, start_time, end_time, "
                f"status, recorded_at) VALUES ({', '.join([mark] * 8)})",
                ("old-run", "local", "tick", "chain", 1.0, 2.0, "success", 3.0))
    finally:
        conn.close()


def old_profiles(location: str, upto: int) -> None:
    """The importer's profiles database at old version ``upto`` (a path, or a PostgreSQL URL),
    with one profile."""
    if location.startswith(("postgresql://", "postgres://")):
        import psycopg

        conn: Any = psycopg.connect(location, autocommit=True)
        mark, translate = "%s", _pg
    else:
        conn = sqlite3.connect(location, isolation_level=None)
        mark, translate = "?", _same
    try:
        for statement in _statements(translate(OLD_PROFILES_TABLE)):
            conn.execute(statement)
        for version, script in enumerate(OLD_PROFILES[:upto], start=1):
            for statement in _statements(translate(script)):
                conn.execute(statement)
            conn.execute(f"INSERT INTO bga_profile_migrations VALUES ({mark}, {mark})",
                         (version, time.time()))
        conn.execute(f"INSERT INTO profiles (identity, full_name, created_at, updated_at) "
                     f"VALUES ({mark}, {mark}, {mark}, {mark})",
                     ("email:ada@example.com", "Ada", 1.0, 1.0))
    finally:
        conn.close()
