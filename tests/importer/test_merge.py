"""The merge policy: newer non-empty fields win, empty never erases, older rows only fill gaps,
extra merged key by key; and the result does not depend on batch boundaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nodes.profile_import.merge import INSERTED, UNCHANGED, UPDATED, merge
from nodes.profile_import.models import Profile, validate_row
from tests.importer.helpers import people_rows, run_import, snapshot, store_of, write_csv


def profile(**fields: Any) -> Profile:
    p, reasons = validate_row({"email": "ada@example.com", **fields})
    assert p is not None, reasons
    return p


def test_first_row_is_inserted() -> None:
    record, outcome = merge(None, profile(full_name="Ada", extra={"k": 1}))
    assert outcome == INSERTED
    assert record["full_name"] == "Ada" and record["extra"] == {"k": 1}


def test_newer_non_empty_fields_win_and_empty_fields_never_erase() -> None:
    record, _ = merge(None, profile(full_name="Ada", company="Acme", phone="+1 415 555 0132"))
    record, outcome = merge(record, profile(full_name="", company="Globex", phone=None))
    assert outcome == UPDATED
    assert (record["full_name"], record["company"], record["phone"]) == (
        "Ada", "Globex", "+14155550132")


def test_same_values_in_another_spelling_are_unchanged() -> None:
    record, _ = merge(None, profile(full_name="Ada Lovelace", phone="(415) 555-0132"))
    again, outcome = merge(record, profile(email="ADA@example.com", full_name=" Ada  Lovelace",
                                           phone="+1 415.555.0132"))
    assert outcome == UNCHANGED and again == record


def test_older_rows_only_fill_gaps() -> None:
    record, _ = merge(None, profile(title="CTO", updated_at="2025-06-01"))
    record, outcome = merge(record, profile(title="Intern", company="Acme",
                                            updated_at="2024-01-01"))
    assert outcome == UPDATED  # the company was empty: filled
    assert (record["title"], record["company"]) == ("CTO", "Acme")
    record, outcome = merge(record, profile(title="Intern", updated_at="2024-01-01"))
    assert outcome == UNCHANGED and record["title"] == "CTO"


def test_newer_timestamp_wins_and_is_kept() -> None:
    record, _ = merge(None, profile(title="CTO", updated_at="2024-01-01"))
    record, outcome = merge(record, profile(title="CEO", updated_at="2025-01-01"))
    assert outcome == UPDATED and record["title"] == "CEO"
    assert record["source_updated_at"] == profile(updated_at="2025-01-01").updated_at


def test_rows_without_timestamps_count_as_newer() -> None:
    record, _ = merge(None, profile(title="CTO", updated_at="2025-06-01"))
    record, outcome = merge(record, profile(title="CEO"))
    assert outcome == UPDATED and record["title"] == "CEO"


def test_extra_is_merged_key_by_key() -> None:
    record, _ = merge(None, profile(extra={"a": 1, "b": 2}))
    record, outcome = merge(record, profile(extra={"b": 3, "c": "", "d": 4}))
    assert outcome == UPDATED and record["extra"] == {"a": 1, "b": 3, "d": 4}
    _, outcome = merge(record, profile(extra={"a": 1}))
    assert outcome == UNCHANGED


async def test_merge_applies_across_files_by_email_and_by_url(tmp_path: Path,
                                                             db_url: str) -> None:
    url = db_url
    first = tmp_path / "a.jsonl"
    first.write_text('{"email": "ada@example.com", "name": "Ada", "company": "Acme"}\n'
                     '{"url": "https://www.linkedin.com/in/bob/", "name": "Bob"}\n')
    second = tmp_path / "b.jsonl"
    second.write_text('{"email": "Ada@Example.com", "company": "Globex", "phone": ""}\n'
                      '{"url": "http://linkedin.com/in/bob?utm_source=x", "title": "CTO"}\n'
                      '{"url": "linkedin.com/in/bob", "title": "CTO"}\n')
    await run_import(first, url)
    report = await run_import(second, url)
    assert (report["inserted"], report["updated"], report["unchanged"]) == (0, 2, 1)
    with store_of(url) as store:
        ada = store.profile("email:ada@example.com")
        bob = store.profile("url:https://linkedin.com/in/bob")
        assert store.count_profiles() == 2
    assert ada is not None and (ada["full_name"], ada["company"]) == ("Ada", "Globex")
    assert bob is not None and (bob["full_name"], bob["title"]) == ("Bob", "CTO")


@pytest.mark.parametrize("batch_size", [1, 7, 64])
async def test_batch_size_does_not_change_the_result(tmp_path: Path, batch_size: int,
                                                     db_url: str) -> None:
    rows = people_rows(400)  # duplicates fall inside batches and across them
    path = write_csv(tmp_path / "people.csv", rows)
    one = f"sqlite:///{tmp_path / 'one.db'}"
    many = db_url
    whole = await run_import(path, one, batch_size=10_000)
    sliced = await run_import(path, many, batch_size=batch_size)
    assert sliced["batches"] == -(-400 // batch_size) and whole["batches"] == 1
    a, b = snapshot(one, whole["job_id"]), snapshot(many, sliced["job_id"])
    assert a["profiles"] == b["profiles"] and a["quarantine"] == b["quarantine"]
    assert {k: whole[k] for k in ("inserted", "updated", "unchanged", "rejected")} == \
        {k: sliced[k] for k in ("inserted", "updated", "unchanged", "rejected")}
    assert whole["updated"] + whole["unchanged"] > 0 and whole["rejected"] > 0
