"""Every table the system keeps, and the one migration runner that makes them.

Two append-only streams of versioned migrations, each spelled out per dialect:

- ``STATE``: the state database's own tables (inbox streams, inbox, inbox quarantine, local
  traces, trace quarantine, alert outbox and messages, the entries of the linear threads'
  checkpoints), recorded in ``bga_migrations``.
  LangGraph's checkpointer keeps its tables (``checkpoints``, ``writes`` / ``checkpoint_*``)
  with its own ``setup()``, which the backend runs right after this stream, under the same
  lock.
- ``PROFILES``: the importer's tables (``profiles``, ``import_jobs``, ``quarantine``,
  ``processed_files``), recorded in ``bga_profile_migrations``: on SQLite in the sibling file
  ``<state>.profiles.db`` (bulk imports never hold the state file's write lock), on
  PostgreSQL in the state's own schema.

Rules: never edit or reorder an entry, only append (a database records the versions it has
applied, and ``migrate`` applies the rest, in order, in one write transaction); each entry is
a tuple of statements (no script is ever split on ``;``), or a named data step the opener
supplies (the importer owns the e-mail rule its rekeying step applies). ``migrate`` is
idempotent and safe to race; ``require_current`` is what a read-only open does instead: it
writes nothing and says clearly what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from state.backends.lease import SQLITE_SCHEMA as LEASE_TABLE
from state.backends.syncdb import SyncDb

SyncDialect = Literal["sqlite", "postgres"]
DataStep = Callable[[SyncDb], None]


@dataclass(frozen=True)
class Migration:
    """One version: statements run in order, or a data step named ``data``, not both."""

    statements: tuple[str, ...] = ()
    data: str | None = None


@dataclass(frozen=True)
class Stream:
    """An append-only list of migrations per dialect and the table recording them."""

    name: str  # for messages: "state database", "profiles database"
    table: str
    table_ddl: Mapping[SyncDialect, str]
    migrations: Mapping[SyncDialect, tuple[Migration, ...]]
    before: Mapping[SyncDialect, tuple[str, ...]]  # outside the transaction, every time
    missing_hint: str

    def of(self, dialect: SyncDialect) -> tuple[Migration, ...]:
        return self.migrations[dialect]

    def latest(self, dialect: SyncDialect) -> int:
        """The version a current database of ``dialect`` is at (the lists may differ in
        length: a table only one dialect needs is a migration of that dialect alone)."""
        return len(self.migrations[dialect])


# -- the state database ----------------------------------------------------------------------

def _outbox(r: str, i: str) -> tuple[str, ...]:
    """The alert outbox and its messages (``state/outbox.py``) in one dialect: ``r`` its
    double, ``i`` its 64-bit integer (a template for this entry only)."""
    return (
        f"""CREATE TABLE IF NOT EXISTS bga_outbox (
            key TEXT PRIMARY KEY, channel TEXT NOT NULL, subject TEXT NOT NULL,
            event TEXT NOT NULL, created_at {r} NOT NULL, payload TEXT NOT NULL, message TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS bga_outbox_pending ON bga_outbox "
        "(channel, message, created_at)",
        "CREATE INDEX IF NOT EXISTS bga_outbox_subject ON bga_outbox "
        "(channel, subject, created_at)",
        f"""CREATE TABLE IF NOT EXISTS bga_alert_messages (
            key TEXT PRIMARY KEY, channel TEXT NOT NULL, created_at {r} NOT NULL,
            alerts {i} NOT NULL, status TEXT NOT NULL, attempts {i} NOT NULL,
            next_at {r} NOT NULL, last_error TEXT, last_try_at {r}, sent_at {r}
        )""",
        "CREATE INDEX IF NOT EXISTS bga_alert_messages_due ON bga_alert_messages "
        "(status, next_at)",
    )


OUTBOX_TABLES: dict[SyncDialect, tuple[str, ...]] = {
    "sqlite": _outbox("REAL", "INTEGER"), "postgres": _outbox("DOUBLE PRECISION", "BIGINT")}


def _tree_entries(b: str, c: str) -> tuple[str, ...]:
    """The entries of linear threads' checkpoints (``state.backends.tree``) in one dialect:
    ``b`` its byte string, ``c`` the collation that orders checkpoint ids as bytes (a
    template for this entry only)."""
    return (
        f"""CREATE TABLE IF NOT EXISTS bga_tree_entries (
            thread_id TEXT NOT NULL, path {b} NOT NULL, born TEXT{c} NOT NULL, died TEXT{c},
            type TEXT NOT NULL, value {b} NOT NULL, PRIMARY KEY (thread_id, path, born)
        )""",
        "CREATE INDEX IF NOT EXISTS bga_tree_entries_died ON bga_tree_entries "
        "(thread_id, died)",
    )


# the entries born after a checkpoint (``EntryStore.load`` of a newer one reads only those):
# without it that range scanned every open entry of the thread (~26 ms at 500 series)
TREE_ENTRIES_BORN = ("CREATE INDEX IF NOT EXISTS bga_tree_entries_born ON bga_tree_entries "
                     "(thread_id, born)",)


_STATE_SQLITE = (
    Migration((
        """CREATE TABLE IF NOT EXISTS bga_streams (
            stream_id INTEGER PRIMARY KEY AUTOINCREMENT,
            producer TEXT NOT NULL, host TEXT, pid INTEGER,
            opened_at REAL NOT NULL, closed_at REAL
        )""",
        """CREATE TABLE IF NOT EXISTS bga_inbox (
            stream_id INTEGER NOT NULL, seq INTEGER NOT NULL,
            kind TEXT NOT NULL, payload BLOB NOT NULL,
            PRIMARY KEY (stream_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS bga_quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            stream_id INTEGER, seq INTEGER, kind TEXT, payload BLOB,
            reason TEXT NOT NULL, at REAL NOT NULL
        )""",
    )),
    Migration((  # the local trace store (state/traces.py)
        """CREATE TABLE IF NOT EXISTS bga_traces (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL, trace_id TEXT, parent_run_id TEXT, project TEXT NOT NULL,
            name TEXT NOT NULL, run_type TEXT NOT NULL, start_time REAL NOT NULL,
            end_time REAL NOT NULL, status TEXT NOT NULL, error TEXT, tags TEXT, metadata TEXT,
            prompt_tokens REAL, completion_tokens REAL, total_tokens REAL, total_cost REAL,
            first_token_time REAL, recorded_at REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS bga_trace_quarantine (
            source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, record TEXT,
            at REAL NOT NULL, PRIMARY KEY (source, key)
        ) WITHOUT ROWID""",
    )),
    # each stream's highest committed sequence number (a lost commit reply is looked up)
    Migration(("ALTER TABLE bga_streams ADD COLUMN last_seq INTEGER NOT NULL DEFAULT 0",)),
    Migration(OUTBOX_TABLES["sqlite"]),  # the alert outbox and its messages (state/outbox.py)
    # the locks' lease rows (state/backends/lease.py; PostgreSQL's locks are sessions)
    Migration((LEASE_TABLE,)),
    Migration(_tree_entries("BLOB", "")),  # linear threads' checkpoints (state/backends/tree.py)
    Migration(TREE_ENTRIES_BORN),  # their entries by birth (EntryStore.load since a checkpoint)
)

_STATE_POSTGRES = (
    Migration((
        """CREATE TABLE IF NOT EXISTS bga_streams (
            stream_id BIGSERIAL PRIMARY KEY,
            producer TEXT NOT NULL, host TEXT, pid INTEGER,
            opened_at DOUBLE PRECISION NOT NULL, closed_at DOUBLE PRECISION
        )""",
        """CREATE TABLE IF NOT EXISTS bga_inbox (
            stream_id BIGINT NOT NULL, seq BIGINT NOT NULL,
            kind TEXT NOT NULL, payload BYTEA NOT NULL,
            PRIMARY KEY (stream_id, seq)
        )""",
        """CREATE TABLE IF NOT EXISTS bga_quarantine (
            id BIGSERIAL PRIMARY KEY,
            stream_id BIGINT, seq BIGINT, kind TEXT, payload BYTEA,
            reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL
        )""",
    )),
    Migration((  # the local trace store (state/traces.py)
        """CREATE TABLE IF NOT EXISTS bga_traces (
            seq BIGSERIAL PRIMARY KEY,
            id TEXT NOT NULL, trace_id TEXT, parent_run_id TEXT, project TEXT NOT NULL,
            name TEXT NOT NULL, run_type TEXT NOT NULL,
            start_time DOUBLE PRECISION NOT NULL, end_time DOUBLE PRECISION NOT NULL,
            status TEXT NOT NULL, error TEXT, tags TEXT, metadata TEXT,
            prompt_tokens DOUBLE PRECISION, completion_tokens DOUBLE PRECISION,
            total_tokens DOUBLE PRECISION, total_cost DOUBLE PRECISION,
            first_token_time DOUBLE PRECISION, recorded_at DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS bga_trace_quarantine (
            source TEXT NOT NULL, key TEXT NOT NULL, reason TEXT NOT NULL, record TEXT,
            at DOUBLE PRECISION NOT NULL, PRIMARY KEY (source, key)
        )""",
    )),
    # each stream's highest committed sequence number (a lost commit reply is looked up)
    Migration(("ALTER TABLE bga_streams ADD COLUMN IF NOT EXISTS last_seq BIGINT NOT NULL "
               "DEFAULT 0",)),
    Migration(OUTBOX_TABLES["postgres"]),  # the alert outbox and its messages (state/outbox.py)
    Migration(_tree_entries("BYTEA", ' COLLATE "C"')),  # linear threads' checkpoints (tree.py)
    Migration(TREE_ENTRIES_BORN),  # their entries by birth (EntryStore.load since a checkpoint)
)

STATE = Stream(
    name="state database", table="bga_migrations",
    table_ddl={"sqlite": "CREATE TABLE IF NOT EXISTS bga_migrations "
                         "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)",
               "postgres": "CREATE TABLE IF NOT EXISTS bga_migrations "
                           "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"},
    migrations={"sqlite": _STATE_SQLITE, "postgres": _STATE_POSTGRES},
    # auto_vacuum only takes effect on a new file; WAL is a property of the file
    before={"sqlite": ("PRAGMA auto_vacuum=INCREMENTAL", "PRAGMA journal_mode=WAL"),
            "postgres": ()},
    missing_hint="wrong --db? nothing has run yet? `bga run` or `bga demo` creates it",
)

# -- the importer's profiles database --------------------------------------------------------

_JOB_COLUMNS = """
    job_id TEXT PRIMARY KEY,
    path TEXT NOT NULL, name TEXT NOT NULL,
    content_hash TEXT NOT NULL, size {i} NOT NULL, mtime_ns {i} NOT NULL,
    status TEXT NOT NULL,
    layout TEXT,
    byte_offset {i} NOT NULL DEFAULT 0,
    line_no {i} NOT NULL DEFAULT 0,
    batches {i} NOT NULL DEFAULT 0,
    rows_read {i} NOT NULL DEFAULT 0,
    inserted {i} NOT NULL DEFAULT 0,
    updated {i} NOT NULL DEFAULT 0,
    unchanged {i} NOT NULL DEFAULT 0,
    rejected {i} NOT NULL DEFAULT 0,
    reasons TEXT NOT NULL DEFAULT '{{}}',
    warnings TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    forced {i} NOT NULL DEFAULT 0,
    duplicate_of TEXT,
    runs {i} NOT NULL DEFAULT 0,
    active_s {r} NOT NULL DEFAULT 0,
    started_at {r} NOT NULL, updated_at {r} NOT NULL, finished_at {r}
"""


def _profiles_v1(i: str, r: str, pk: str) -> Migration:
    """The first profiles schema in one dialect: ``i`` its 64-bit integer type, ``r`` its
    double, ``pk`` its auto-numbered ``id`` column. (A template for this entry only: a later
    change is a new entry, spelled out per dialect.)"""
    return Migration((
        f"""CREATE TABLE IF NOT EXISTS profiles (
            {pk},
            identity TEXT NOT NULL UNIQUE,
            full_name TEXT, email TEXT, phone TEXT, company TEXT, title TEXT, location TEXT,
            profile_url TEXT, source TEXT, source_updated_at {r},
            extra TEXT NOT NULL DEFAULT '{{}}',
            created_at {r} NOT NULL, updated_at {r} NOT NULL
        )""",
        f"CREATE TABLE IF NOT EXISTS import_jobs ({_JOB_COLUMNS.format(i=i, r=r)})",
        "CREATE INDEX IF NOT EXISTS import_jobs_status ON import_jobs (status, content_hash)",
        "CREATE INDEX IF NOT EXISTS import_jobs_path ON import_jobs (path, size, mtime_ns)",
        f"""CREATE TABLE IF NOT EXISTS quarantine (
            {pk},
            job_id TEXT NOT NULL, line {i} NOT NULL,
            raw TEXT NOT NULL, reasons TEXT NOT NULL, codes TEXT NOT NULL, at {r} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS quarantine_job ON quarantine (job_id, line)",
        f"""CREATE TABLE IF NOT EXISTS processed_files (
            content_hash TEXT PRIMARY KEY,
            job_id TEXT NOT NULL, path TEXT NOT NULL, size {i} NOT NULL,
            finished_at {r} NOT NULL
        )""",
    ))


# line accounting: the physical lines of the file (counted while hashing it, split on LF and
# on CR) against the lines the records and skipped blank lines consumed
_LINE_COLUMNS = ("record_lines {i} NOT NULL DEFAULT 0", "blank_lines {i} NOT NULL DEFAULT 0",
                 "file_lines_lf {i}", "file_lines_cr {i}")
# e-mail identities take the domain's one IDNA form (``normalize_email``, the importer's)
_REKEY = Migration(data="rekey_idna_emails")

PROFILES = Stream(
    name="profiles database", table="bga_profile_migrations",
    table_ddl={"sqlite": "CREATE TABLE IF NOT EXISTS bga_profile_migrations "
                         "(version INTEGER NOT NULL PRIMARY KEY, applied_at REAL NOT NULL)",
               "postgres": "CREATE TABLE IF NOT EXISTS bga_profile_migrations "
                           "(version BIGINT NOT NULL PRIMARY KEY, "
                           "applied_at DOUBLE PRECISION NOT NULL)"},
    migrations={
        "sqlite": (
            _profiles_v1("INTEGER", "REAL", "id INTEGER PRIMARY KEY"),
            Migration(tuple(f"ALTER TABLE import_jobs ADD COLUMN {c.format(i='INTEGER')}"
                            for c in _LINE_COLUMNS)),
            _REKEY,
        ),
        "postgres": (
            _profiles_v1("BIGINT", "DOUBLE PRECISION",
                         "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
            Migration(tuple(f"ALTER TABLE import_jobs ADD COLUMN {c.format(i='BIGINT')}"
                            for c in _LINE_COLUMNS)),
            _REKEY,
        ),
    },
    before={"sqlite": (), "postgres": ()},
    missing_hint="wrong --db? nothing was imported yet?",
)


# -- the runner --------------------------------------------------------------------------------


class SchemaNotReady(ValueError):
    """A read-only open found no schema, or one with migrations still to apply."""


def applied(db: SyncDb, stream: Stream) -> set[int]:
    """The versions of ``stream`` recorded in ``db`` (empty if it has none)."""
    if not db.has_table(stream.table):
        return set()
    return {int(r["version"]) for r in db.all(f"SELECT version FROM {stream.table}")}


def migrate(db: SyncDb, stream: Stream, steps: Mapping[str, DataStep] | None = None
            ) -> list[int]:
    """Apply the migrations of ``stream`` that ``db`` has not recorded, in order, in one
    write transaction (``db.write()``: the caller's lock makes racing openers wait, then
    find nothing to do); returns the versions applied. A data step (``Migration.data``) runs
    from ``steps``, in the same transaction; one that is due and not supplied is an error."""
    steps = steps or {}
    for statement in stream.before[db.dialect]:
        db.run_before(statement)
    done: list[int] = []
    with db.write():
        db.run(stream.table_ddl[db.dialect])
        have = applied(db, stream)
        for version, migration in enumerate(stream.of(db.dialect), start=1):
            if version in have:
                continue
            for statement in migration.statements:
                db.run(statement)
            if migration.data is not None:
                step = steps.get(migration.data)
                if step is None:
                    raise RuntimeError(f"{stream.name} migration {version} needs data step "
                                       f"{migration.data!r}, which this opener does not have")
                step(db)
            db.run(f"INSERT INTO {stream.table} VALUES (?, ?)", (version, time.time()))
            done.append(version)
    return done


def require_current(db: SyncDb, stream: Stream, where: str, *, also: Sequence[str] = ()
                    ) -> None:
    """What a read-only open checks instead of migrating (it writes nothing): the schema is
    there and has every migration, and tables ``also`` (the checkpointer's, which its own
    set-up makes after the stream's) exist; SchemaNotReady says what is missing otherwise."""
    if not db.has_table(stream.table):
        raise SchemaNotReady(f"no {stream.name} at {where} ({stream.missing_hint})")
    latest = stream.latest(db.dialect)
    missing = sorted(set(range(1, latest + 1)) - applied(db, stream))
    if missing:
        raise SchemaNotReady(
            f"the {stream.name} at {where} lacks migration(s) {', '.join(map(str, missing))} "
            f"of {latest}: open it read-write once (`bga db upgrade --db ...`) to "
            "migrate it; a read-only open changes nothing")
    absent = [t for t in also if not db.has_table(t)]
    if absent:
        raise SchemaNotReady(f"the {stream.name} at {where} has no table {', '.join(absent)} "
                             "yet (is it being created right now?): open it read-write once "
                             "(`bga db upgrade --db ...`); a read-only open changes nothing")


def require_saver_migrations(db: SyncDb, table: str, count: int, where: str) -> None:
    """The read-only check of a checkpointer that records its own migrations (PostgreSQL's
    ``checkpoint_migrations``): all ``count`` of them are applied, else SchemaNotReady."""
    row = db.one(f"SELECT count(*) AS n FROM {table}") if db.has_table(table) else None
    done = int(row["n"]) if row is not None else 0
    if done < count:
        raise SchemaNotReady(f"the state database at {where} has {done} of the checkpointer's "
                             f"{count} migrations (is it being created right now?): open it "
                             "read-write once (`bga db upgrade --db ...`); a read-only open "
                             "changes nothing")
