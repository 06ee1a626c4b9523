"""The profiles database: profiles, import jobs, quarantine and processed files.

Where it lives depends on the state database URL (``profiles_location``):

- ``sqlite:///path/state.db``: a SQLite file beside it, ``<state>.profiles.db`` (for the
  default ``sqlite:///./data/state.db`` that is ``./data/state.profiles.db``). A sibling file,
  not the state file itself, so bulk imports never hold the write lock that the scheduler's
  inbox and checkpoints need.
- ``memory://name``: a shared in-memory SQLite database.
- ``postgresql://...`` (or ``postgres://``): the same PostgreSQL database and schema as the
  state (the connection's ``current_schema()``, so ``?options=-csearch_path%3Dname`` moves
  both), in tables of the same names as on SQLite (``profiles``, ``import_jobs``,
  ``quarantine``, ``processed_files``, plus ``bga_profile_migrations``); they do not clash with
  the state's ``bga_*`` and ``checkpoint*`` tables.

The resume scheme rests on one rule: a batch's profile upserts, its quarantined rows and the
job's new position (byte offset, line, counters) commit in ONE transaction, guarded by a
compare-and-swap on the old position. A kill before the commit loses the whole batch (it is
read again on resume); a kill after it loses nothing; a second process working the same job
cannot commit the same batch twice. The job graph's checkpoints only mirror this row.

One writer at a time, on both dialects: every read-merge-write transaction (``prepare``, a
batch, ``finish``, migrations) runs under the database's write lock: ``BEGIN IMMEDIATE`` on
SQLite; on PostgreSQL a transaction-scoped advisory lock keyed on the schema
(``pg_advisory_xact_lock``), taken first, so in READ COMMITTED every later statement of the
transaction sees what the previous writer committed. Without it two batches (of one job, or of
two files sharing people) could both read a profile and both write their merge (a lost
update), or race on the identity's unique index. Lock waits give up after ``BUSY_TIMEOUT_S``
on both (``busy_timeout``, ``lock_timeout``).

The tables and their append-only migrations belong to the database layer
(``state.backends.migrations.PROFILES``, one runner for every table of the system); the
connection is a ``state.backends.syncdb.SyncDb``, whose SQL is SQLite's spelling with ``?``
placeholders. This module owns what the importer knows: the merge, the job transactions, and
the data step of the IDNA rekeying migration. PostgreSQL text cannot hold NUL characters:
they are stored as U+FFFD there (so re-importing such a row counts it ``updated`` there,
``unchanged`` on SQLite).
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nodes.profile_import.merge import INSERTED, UNCHANGED, UPDATED, Record, merge
from nodes.profile_import.models import FIELDS, REASONS, Profile, Reason, normalize_email
from state.backends.migrations import PROFILES, DataStep, migrate, require_current
from state.backends.syncdb import Row, SyncDb, open_profiles
from state.backends.url import parse_url
from state.redact import redact

_COLUMNS = (*FIELDS, "source_updated_at", "extra")



def _rekey_idna_emails(db: SyncDb) -> None:
    """E-mail identities take the domain's one IDNA form (``normalize_email``): profiles keyed
    by the punycode spelling (``email:jeff@xn--fiqq24b10vi0d.tw``, how ASCII addresses were
    keyed before) move to the Unicode key. When both keys exist (the same person imported
    under both spellings), the later-created profile is applied to the earlier one with the
    merge policy, as if its row had come after, and removed."""
    now = time.time()
    for row in db.all("SELECT * FROM profiles WHERE identity LIKE ? ORDER BY id",
                      ("email:%xn--%",)):
        try:
            email = normalize_email(row["identity"][len("email:"):], test_domains=True)
        except ValueError:
            continue  # not an address today: it keeps its old key
        key = f"email:{email}"
        if key == row["identity"]:
            continue
        other = db.one("SELECT * FROM profiles WHERE identity=?", (key,))
        if other is None:
            db.run("UPDATE profiles SET identity=?, email=?, updated_at=? WHERE id=?",
                   (key, email, now, row["id"]))
            continue
        first, later = sorted((row, other), key=lambda r: (r["created_at"], r["id"]))
        merged, _ = merge(_record_of(first), Profile.model_construct(**{
            **{f: later[f] for f in FIELDS}, "updated_at": later["source_updated_at"],
            "extra": orjson.loads(later["extra"])}))
        merged["email"] = email
        db.run("DELETE FROM profiles WHERE id=?", (later["id"],))
        db.run(f"UPDATE profiles SET identity=?, {', '.join(f'{c}=?' for c in _COLUMNS)}, "
               "updated_at=? WHERE id=?", (key, *_values_of(merged), now, first["id"]))


# the data steps of ``PROFILES`` migrations (run in the migration's transaction)
DATA_STEPS: dict[str, DataStep] = {"rekey_idna_emails": _rekey_idna_emails}


class JobMoved(RuntimeError):
    """Another process advanced or finished this job since this one read its position."""


def profiles_location(database_url: str) -> str:
    """Where the profiles of the system at ``database_url`` live (see the module docstring):
    a SQLite path, a SQLite ``file:`` URI (memory), or the PostgreSQL URL itself."""
    return parse_url(database_url).profiles_location


def default_inbox(database_url: str) -> Path | None:
    """The watched folder: ``imports/`` beside the state database (``./data/imports``); None
    when the state is not a file (memory, PostgreSQL): then the agent needs option ``inbox``."""
    path = parse_url(database_url).path
    return None if path is None else path.parent / "imports"


def database_errors() -> tuple[type[Exception], ...]:
    """The driver errors the profiles database can raise (psycopg's only once it is loaded,
    so SQLite-only processes never import it)."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error, psycopg.Error) if psycopg is not None else (sqlite3.Error,)


@dataclass(frozen=True)
class FileFacts:
    """What one read of the whole file tells before the import: its content hash and its
    physical lines, counted independently of the parser (the line-accounting reference)."""

    digest: str
    lines_lf: int  # lines split on LF (LF and CRLF files)
    lines_cr: int  # lines split on CR (CR-only files)


def file_facts(path: Path) -> FileFacts:
    digest = hashlib.sha256()
    lf = cr = 0
    last = b""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            lf += chunk.count(b"\n")
            cr += chunk.count(b"\r")
            last = chunk[-1:]
    # an unterminated last line is a line too
    return FileFacts(digest.hexdigest(), lf + (last not in (b"", b"\n")),
                     cr + (last not in (b"", b"\r")))


def file_hash(path: Path) -> str:
    return file_facts(path).digest


@dataclass
class Prepared:
    """What ``prepare`` decided for a file: a new job, a resumed one, or a skip."""

    job: dict[str, Any]
    action: str  # new | resumed | skipped


def _record_of(row: Row) -> Record:
    """A stored profile as the merge policy sees it."""
    record = {c: row[c] for c in _COLUMNS}
    record["extra"] = orjson.loads(record["extra"])
    return record


def _values_of(record: Record) -> list[Any]:
    """A record's values in ``_COLUMNS`` order, as stored."""
    values = [record[f] for f in FIELDS]
    values.append(record["source_updated_at"])
    values.append(orjson.dumps(record["extra"], option=orjson.OPT_SORT_KEYS).decode())
    return values


def _decode_job(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    job = dict(row)
    for key in ("reasons", "warnings", "layout"):
        job[key] = orjson.loads(job[key]) if job[key] else None
    return job


class ProfileStore:
    """One connection to the profiles database (use from one thread at a time)."""

    def __init__(self, db: SyncDb, location: str) -> None:
        self.db = db
        self.location = location
        # fault-injection points for the kill-and-resume tests: called inside the batch
        # transaction just before COMMIT, and right after it
        self.before_commit: Callable[[dict[str, Any]], None] | None = None
        self.after_commit: Callable[[dict[str, Any]], None] | None = None

    @classmethod
    def open(cls, location: str, *, create: bool = True) -> ProfileStore:
        """Connect and migrate. ``create=False`` (read-only tools) creates and migrates
        nothing: FileNotFoundError for a missing database, ``SchemaNotReady`` (a ValueError
        naming what is missing) for one whose schema is absent or not current;
        ConnectionError if PostgreSQL is unreachable."""
        db = open_profiles(location, create=create)
        try:
            if create:
                migrate(db, PROFILES, DATA_STEPS)
            else:
                require_current(db, PROFILES, db.where)
        except BaseException:
            db.close()
            raise
        return cls(db, location)

    @property
    def where(self) -> str:
        return self.db.where

    def close(self) -> None:
        self.db.close()

    # -- jobs ---------------------------------------------------------------------------------
    def job(self, job_id: str) -> dict[str, Any] | None:
        return _decode_job(self.db.one("SELECT * FROM import_jobs WHERE job_id=?", (job_id,)))

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM import_jobs ORDER BY started_at DESC LIMIT ?",
                           (limit,))
        return [j for j in map(_decode_job, rows) if j is not None]

    def running_jobs(self) -> list[dict[str, Any]]:
        rows = self.db.all("SELECT * FROM import_jobs WHERE status='running' "
                           "ORDER BY started_at")
        return [j for j in map(_decode_job, rows) if j is not None]

    def seen(self, path: Path, size: int, mtime_ns: int) -> dict[str, Any] | None:
        """The latest job of this exact file version (path, size, mtime), if any."""
        return _decode_job(self.db.one(
            "SELECT * FROM import_jobs WHERE path=? AND size=? AND mtime_ns=? "
            "ORDER BY started_at DESC LIMIT 1", (str(path), size, mtime_ns)))

    def prepare(self, path: Path, *, force: bool = False) -> Prepared:
        """Find or create the job for ``path``: resume a running job of the same content,
        skip content already imported (unless ``force``), else start a new job.

        Raises FileNotFoundError / OSError when the file cannot be read."""
        path = path.resolve()
        st = path.stat()
        same = self.seen(path, st.st_size, st.st_mtime_ns)
        if same is not None and same["status"] == "running":
            return Prepared(same, "resumed")
        facts = file_facts(path)
        digest = facts.digest
        now = time.time()
        db = self.db
        with db.write():
            row = db.one("SELECT job_id FROM import_jobs WHERE status='running' AND "
                         "content_hash=? ORDER BY started_at LIMIT 1", (digest,))
            if row is not None:
                job_id, action = row["job_id"], "resumed"
                db.run("UPDATE import_jobs SET path=?, name=?, size=?, mtime_ns=?, "
                       "file_lines_lf=?, file_lines_cr=? WHERE job_id=?",
                       (str(path), path.name, st.st_size, st.st_mtime_ns, facts.lines_lf,
                        facts.lines_cr, job_id))
            else:
                done = db.one("SELECT job_id FROM processed_files WHERE content_hash=?",
                              (digest,))
                job_id = f"imp_{uuid.uuid4().hex[:12]}"
                skipped = done is not None and not force
                action = "skipped" if skipped else "new"
                db.run(
                    "INSERT INTO import_jobs (job_id, path, name, content_hash, size, "
                    "mtime_ns, status, forced, duplicate_of, started_at, updated_at, "
                    "finished_at, file_lines_lf, file_lines_cr) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, str(path), path.name, digest, st.st_size, st.st_mtime_ns,
                     "skipped" if skipped else "running", int(force),
                     done["job_id"] if done is not None else None, now, now,
                     now if skipped else None, facts.lines_lf, facts.lines_cr))
        return Prepared(self.job(job_id) or {}, action)

    def set_layout(self, job_id: str, layout: dict[str, Any], offset: int, line: int,
                   warnings: Sequence[str] = ()) -> None:
        """Record what discovery found; the first batch starts at ``offset``."""
        changed = self.db.run(
            "UPDATE import_jobs SET layout=?, byte_offset=?, line_no=?, warnings=?, updated_at=?"
            " WHERE job_id=? AND status='running' AND layout IS NULL AND batches=0",
            (orjson.dumps(layout).decode(), offset, line, orjson.dumps(list(warnings)).decode(),
             time.time(), job_id))
        if changed != 1:
            raise JobMoved(f"job {job_id} was started by another process")

    def add_warning(self, job_id: str, warning: str) -> None:
        job = self.job(job_id) or {}
        warnings = [*(job.get("warnings") or []), warning]
        self.db.run("UPDATE import_jobs SET warnings=? WHERE job_id=?",
                    (orjson.dumps(warnings).decode(), job_id))

    def begin_run(self, job_id: str) -> None:
        """Count an invocation working on the job (killed ones included)."""
        self.db.run("UPDATE import_jobs SET runs=runs+1 WHERE job_id=?", (job_id,))

    def add_active_time(self, job_id: str, seconds: float) -> None:
        self.db.run("UPDATE import_jobs SET active_s=active_s+? WHERE job_id=?",
                    (seconds, job_id))

    # -- the batch transaction ---------------------------------------------------------------
    def _existing(self, identities: Sequence[str]) -> dict[str, tuple[Record, int]]:
        out: dict[str, tuple[Record, int]] = {}
        cols = ", ".join(("id", "identity", *_COLUMNS))
        for row in self.db.where_in(f"SELECT {cols} FROM profiles WHERE identity", identities):
            out[row["identity"]] = (_record_of(row), row["id"])
        return out

    def commit_batch(self, job_id: str, *, expected_offset: int, offset: int, line: int,
                     read: int, groups: dict[str, list[Profile]],
                     rejected: Sequence[tuple[int, str, list[Reason]]],
                     record_lines: int = 0, blank_lines: int = 0) -> dict[str, int]:
        """Apply one batch and move the job to ``offset`` atomically; returns the outcomes.

        ``record_lines`` and ``blank_lines`` are the physical lines the batch's records span
        and the blank lines skipped among them (the line accounting of ``line_check``).

        ``groups`` maps each identity to its rows in file order; every row is merged in turn
        (see ``merge``), so duplicates inside the batch count exactly as across batches.
        """
        now = time.time()
        counts = {INSERTED: 0, UPDATED: 0, UNCHANGED: 0}
        db = self.db
        with db.write():
            existing = self._existing(list(groups))
            inserts: list[tuple[Any, ...]] = []
            updates: list[tuple[Any, ...]] = []
            for identity, profiles in groups.items():
                before, row_id = existing.get(identity, (None, 0))
                record = before
                for profile in profiles:
                    record, outcome = merge(record, profile)
                    counts[outcome] += 1
                assert record is not None
                values = _values_of(record)
                if before is None:
                    inserts.append((identity, *values, now, now))
                elif record != before:
                    updates.append((*values, now, row_id))
            if inserts:
                db.insert("profiles", ("identity", *_COLUMNS, "created_at", "updated_at"),
                          inserts)
            if updates:
                db.many(
                    f"UPDATE profiles SET {', '.join(f'{col}=?' for col in _COLUMNS)}, "
                    "updated_at=? WHERE id=?", updates)
            reasons: dict[str, int] = {}
            if rejected:
                db.insert(
                    "quarantine", ("job_id", "line", "raw", "reasons", "codes", "at"),
                    [(job_id, line_no, redact(raw),  # rejected rows are raw text: redacted
                      orjson.dumps([redact(m) for _, m in why]).decode(),
                      orjson.dumps(sorted({code for code, _ in why})).decode(), now)
                     for line_no, raw, why in rejected])
                for _, _, why in rejected:
                    for code in {code for code, _ in why}:
                        reasons[code] = reasons.get(code, 0) + 1
                row = db.one("SELECT reasons FROM import_jobs WHERE job_id=?", (job_id,))
                stored = orjson.loads(row["reasons"]) if row is not None else {}
                for code, n in stored.items():
                    reasons[code] = reasons.get(code, 0) + n
            changed = db.run(
                "UPDATE import_jobs SET byte_offset=?, line_no=?, batches=batches+1, "
                "rows_read=rows_read+?, inserted=inserted+?, updated=updated+?, "
                "unchanged=unchanged+?, rejected=rejected+?, "
                "record_lines=record_lines+?, blank_lines=blank_lines+?, "
                "reasons=CASE WHEN ? THEN ? ELSE reasons END, updated_at=? "
                "WHERE job_id=? AND byte_offset=? AND status='running'",
                (offset, line, read, counts[INSERTED], counts[UPDATED], counts[UNCHANGED],
                 len(rejected), record_lines, blank_lines, bool(rejected),
                 orjson.dumps(reasons).decode(), now, job_id, expected_offset))
            if changed != 1:
                raise JobMoved(f"job {job_id} moved past byte {expected_offset} in another "
                               "process (or was finished there)")
            if self.before_commit is not None:
                self.before_commit({"job_id": job_id, "offset": offset})
        if self.after_commit is not None:
            self.after_commit({"job_id": job_id, "offset": offset})
        return counts

    def finish(self, job_id: str, status: str, error: str | None = None) -> dict[str, Any]:
        """End a job: check the accounting invariant, record the file as processed if done."""
        now = time.time()
        db = self.db
        with db.write():
            job = self.job(job_id)
            if job is None:
                raise KeyError(job_id)
            if job["status"] != "running":
                return job
            quarantined = self.count_quarantined(job_id)
            accounted = job["inserted"] + job["updated"] + job["unchanged"] + quarantined
            if accounted != job["rows_read"] or quarantined != job["rejected"]:
                status = "failed"
                broken = (f"accounting invariant violated: read {job['rows_read']} != inserted "
                          f"{job['inserted']} + updated {job['updated']} + unchanged "
                          f"{job['unchanged']} + quarantined {quarantined}")
                error = f"{broken}; {error}" if error else broken
            lines = line_check(job, complete=status == "done")
            if lines is not None and not lines["ok"]:
                status = "failed"
                broken = f"line accounting violated: {lines['detail']}"
                error = f"{broken}; {error}" if error else broken
            db.run("UPDATE import_jobs SET status=?, error=?, finished_at=?, updated_at=? "
                   "WHERE job_id=?", (status, error, now, now, job_id))
            if status == "done":
                db.run("INSERT INTO processed_files (content_hash, job_id, path, size, "
                       "finished_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (content_hash) DO "
                       "UPDATE SET job_id=excluded.job_id, path=excluded.path, "
                       "size=excluded.size, finished_at=excluded.finished_at",
                       (job["content_hash"], job_id, job["path"], job["size"], now))
        return self.job(job_id) or {}

    # -- reading -------------------------------------------------------------------------------
    def quarantined(self, job_id: str, limit: int = 1000, after_line: int = 0
                    ) -> list[dict[str, Any]]:
        rows = self.db.all(
            "SELECT line, raw, reasons, codes FROM quarantine WHERE job_id=? AND line>? "
            "ORDER BY line, id LIMIT ?", (job_id, after_line, limit))
        return [{"line": r["line"], "raw": r["raw"], "reasons": orjson.loads(r["reasons"]),
                 "codes": orjson.loads(r["codes"])} for r in rows]

    def count_quarantined(self, job_id: str) -> int:
        row = self.db.one("SELECT count(*) AS n FROM quarantine WHERE job_id=?", (job_id,))
        return int(row["n"]) if row is not None else 0

    def profile(self, identity: str) -> dict[str, Any] | None:
        row = self.db.one("SELECT * FROM profiles WHERE identity=?", (identity,))
        if row is None:
            return None
        out = dict(row)
        out["extra"] = orjson.loads(out["extra"])
        return out

    def count_profiles(self) -> int:
        row = self.db.one("SELECT count(*) AS n FROM profiles")
        return int(row["n"]) if row is not None else 0

    def dump_profiles(self) -> list[tuple[Any, ...]]:
        """Every profile without its timestamps, in id order (comparisons in tests)."""
        cols = ("id", "identity", *_COLUMNS)
        return [tuple(r[c] for c in cols)
                for r in self.db.all(f"SELECT {', '.join(cols)} FROM profiles ORDER BY id")]


def line_check(job: dict[str, Any], *, complete: bool) -> dict[str, Any] | None:
    """Every physical line consumed is in a record (imported or quarantined) or was a blank
    line, and a complete job consumed every line of the file (as counted when it was hashed).
    None for JSON arrays (an element may share lines with others) and before discovery."""
    layout = job.get("layout") or {}
    if layout.get("format") not in ("csv", "jsonl") or job.get("file_lines_lf") is None:
        return None  # (a job started before lines were counted has nothing to check against)
    first = int(layout.get("data_line") or 0)  # the header (and a sep= line)
    consumed = first + job["record_lines"] + job["blank_lines"]
    cr = (layout.get("dialect") or {}).get("lineterminator") == "\r"
    in_file = job.get("file_lines_cr" if cr else "file_lines_lf")
    ok = consumed == job["line_no"] and (not complete or in_file is None
                                         or job["line_no"] == in_file)
    detail = (f"{first:,} header + {job['record_lines']:,} in records + {job['blank_lines']:,} "
              f"blank = {consumed:,} lines; parser at line {job['line_no']:,}"
              + (f"; the file has {in_file:,}" if in_file is not None else ""))
    return {"ok": ok, "header": first, "in_records": job["record_lines"],
            "blank": job["blank_lines"], "consumed": job["line_no"], "in_file": in_file,
            "detail": detail}


def report_of(job: dict[str, Any], quarantined: int | None = None) -> dict[str, Any]:
    """The job report: counts, rates, grouped rejection reasons and the invariant check."""
    read = job["rows_read"]
    valid = read - job["rejected"]
    outcomes = job["inserted"] + job["updated"] + job["unchanged"]
    rejected = job["rejected"] if quarantined is None else quarantined
    reasons = dict(sorted((job.get("reasons") or {}).items(), key=lambda kv: -kv[1]))
    active = job.get("active_s") or 0.0
    return {
        "job_id": job["job_id"], "file": job["path"], "name": job["name"],
        "status": job["status"], "format": (job.get("layout") or {}).get("format"),
        "read": read, "inserted": job["inserted"], "updated": job["updated"],
        "unchanged": job["unchanged"], "rejected": job["rejected"],
        "duplicates": job["updated"] + job["unchanged"],
        "invariant_ok": read == outcomes + rejected,
        "lines": line_check(job, complete=job["status"] == "done"),
        "rejection_rate": round(job["rejected"] / read, 6) if read else 0.0,
        "duplicate_rate": round((job["updated"] + job["unchanged"]) / valid, 6) if valid else 0.0,
        "reasons": reasons,
        "reason_labels": {code: REASONS.get(code, code) for code in reasons},
        "batches": job["batches"], "line": job["line_no"], "byte_offset": job["byte_offset"],
        "size": job["size"], "content_hash": job["content_hash"],
        "runs": job.get("runs", 0), "active_s": round(active, 3),
        "rows_per_s": round(read / active, 1) if active > 0 else None,
        "error": job.get("error"), "warnings": job.get("warnings") or [],
        "duplicate_of": job.get("duplicate_of"), "forced": bool(job.get("forced")),
        "started_at": job["started_at"], "finished_at": job.get("finished_at"),
    }


def iter_files(folder: Path, patterns: Iterable[str]) -> list[Path]:
    """Importable files directly in ``folder`` in name order (prefix names to order them);
    hidden and partial (``.part``, ``.tmp``) files are skipped."""
    found: set[Path] = set()
    for pattern in patterns:
        for p in folder.glob(pattern):
            if p.name.startswith((".", "~")) or p.name.endswith((".part", ".tmp")):
                continue
            if p.is_file():
                found.add(p)
    return sorted(found, key=lambda p: p.name)
