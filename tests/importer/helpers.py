"""Shared helpers of the importer tests: sample paths, deterministic files, database snapshots."""

from __future__ import annotations

import contextlib
import csv
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nodes.profile_import.job import ImportOptions
from nodes.profile_import.job_graph import import_file
from nodes.profile_import.store import ProfileStore, profiles_location

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "profiles"
SAMPLE_FILES = ("01_contacts.csv", "02_leads.jsonl", "03_crm_export.json")
HEADER = ["full_name", "email", "phone", "company", "title", "location", "profile_url"]


async def run_import(path: Path, url: str, *, force: bool = False, batch_size: int = 5_000,
                     region: str = "US") -> dict[str, Any]:
    return await import_file(path, database_url=url, force=force,
                             options=ImportOptions(batch_size=batch_size, region=region))


@contextlib.contextmanager
def store_of(url: str) -> Iterator[ProfileStore]:
    store = ProfileStore.open(profiles_location(url))
    try:
        yield store
    finally:
        store.close()


def write_csv(path: Path, rows: list[list[Any]], header: list[str] | None = None,
              *, delimiter: str = ",", encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header or HEADER)
        writer.writerows(rows)
    return path


def people_rows(n: int, *, seed: int = 3) -> list[list[str]]:
    """``n`` deterministic rows: mostly new people, every 10th a duplicate with a new title,
    every 25th a bad e-mail, every 40th a bad phone (so every outcome occurs in every batch)."""
    rng = random.Random(seed)
    rows: list[list[str]] = []
    for i in range(n):
        if i % 10 == 9 and rows:
            dup = list(rows[rng.randrange(len(rows))])
            dup[4] = f"Title {rng.randint(1, 5)}"
            rows.append(dup)
            continue
        email = f"person{i}@example.com" if i % 25 != 24 else f"person{i}@"
        phone = f"(415) {200 + i % 800:03d}-{i % 10_000:04d}" if i % 40 != 39 else "123"
        rows.append([f"Person {i}", email, phone, f"Company {i % 37}", f"Title {i % 5}",
                     "Springfield", f"https://linkedin.com/in/person-{i}" if i % 2 else ""])
    return rows


def snapshot(url: str, job_id: str) -> dict[str, Any]:
    """Everything an import wrote, minus timestamps and ids that differ between databases."""
    with store_of(url) as store:
        job = store.job(job_id) or {}
        quarantine = [(q["line"], q["raw"], tuple(q["reasons"]))
                      for q in store.quarantined(job_id, limit=1_000_000)]
        return {
            # in id order, without the ids: PostgreSQL's sequences skip the ids of rolled-back
            # inserts, so equal data can have other ids there
            "profiles": [row[1:] for row in store.dump_profiles()],
            "quarantine": quarantine,
            "counts": {k: job.get(k) for k in ("rows_read", "inserted", "updated", "unchanged",
                                                "rejected", "byte_offset", "line_no",
                                                "status", "reasons")},
        }
