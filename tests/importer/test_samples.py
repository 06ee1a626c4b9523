"""The sample set: exact accounting per file, the quarantine, and idempotent re-imports.

The expected numbers come from how bench/gen_profiles.py built the files (see
samples/profiles/README.md), not from running the importer.
"""

from __future__ import annotations

from pathlib import Path

from tests.importer.helpers import SAMPLE_FILES, SAMPLES, run_import, snapshot, store_of

EXPECTED = {
    "01_contacts.csv": {"read": 200, "inserted": 183, "updated": 2, "unchanged": 3,
                        "rejected": 12},
    "02_leads.jsonl": {"read": 120, "inserted": 93, "updated": 11, "unchanged": 10,
                       "rejected": 6},
    "03_crm_export.json": {"read": 80, "inserted": 64, "updated": 8, "unchanged": 4,
                           "rejected": 4},
}
REASONS = {
    "01_contacts.csv": {"invalid_email": 6, "invalid_phone": 4, "no_identity": 2,
                        "ragged_row": 1},
    "02_leads.jsonl": {"invalid_email": 3, "invalid_json": 2, "not_an_object": 1},
    "03_crm_export.json": {"invalid_phone": 2, "invalid_timestamp": 1, "no_identity": 1},
}


async def test_sample_set_accounting_is_exact(db_url: str) -> None:
    url = db_url
    totals = dict.fromkeys(("read", "inserted", "updated", "unchanged", "rejected"), 0)
    for name in SAMPLE_FILES:
        report = await run_import(SAMPLES / name, url)
        assert report["status"] == "done", report["error"]
        assert {k: report[k] for k in EXPECTED[name]} == EXPECTED[name], name
        assert report["reasons"] == REASONS[name], name
        assert report["invariant_ok"] is True
        assert report["read"] == (report["inserted"] + report["updated"] + report["unchanged"]
                                  + report["rejected"])
        for key in totals:
            totals[key] += report[key]
    assert totals == {"read": 400, "inserted": 340, "updated": 21, "unchanged": 17,
                      "rejected": 22}
    with store_of(url) as store:
        assert store.count_profiles() == 340  # one profile per insert, none lost or doubled


async def test_rejected_rows_are_quarantined_with_line_and_every_reason(db_url: str) -> None:
    url = db_url
    report = await run_import(SAMPLES / "01_contacts.csv", url)
    with store_of(url) as store:
        rows = store.quarantined(report["job_id"])
    assert len(rows) == report["rejected"] == 12
    lines = [r["line"] for r in rows]
    assert lines == sorted(lines) and len(set(lines)) == 12
    source = (SAMPLES / "01_contacts.csv").read_bytes().decode("utf-8-sig").split("\r\n")
    for row in rows:  # the line number points at the rejected row itself
        assert row["raw"].rstrip("\r\n") == source[row["line"] - 1]
    both = [r for r in rows if set(r["codes"]) == {"invalid_email", "invalid_phone"}]
    assert len(both) == 1  # one row has two problems: both are reported
    assert any("'jane.doe@'" in m for m in both[0]["reasons"])
    assert any("'12'" in m for m in both[0]["reasons"])
    ragged = [r for r in rows if r["codes"] == ["ragged_row"]]
    assert len(ragged) == 1 and "Acme, Inc" in ragged[0]["raw"]
    assert "9 fields, the header has 8" in ragged[0]["reasons"][0]


async def test_sample_messes_are_normalised(db_url: str) -> None:
    url = db_url
    for name in SAMPLE_FILES:
        await run_import(SAMPLES / name, url)
    with store_of(url) as store:
        rows = store.db.all("SELECT full_name, email, phone, profile_url FROM profiles")
        # the CSV header had a BOM: the first column still maps to full_name
        assert sum(1 for r in rows if r["full_name"]) == 340 - 6  # 3 + 3 rows without names
        assert all(r["email"] is None or r["email"] == r["email"].lower() for r in rows)
        assert all(r["phone"] is None or (r["phone"].startswith("+1")
                                          and len(r["phone"]) == 12) for r in rows)
        urls = [r["profile_url"] for r in rows if r["profile_url"]]
        assert all(u.startswith("https://linkedin.com/in/") for u in urls)
        assert all(not u.endswith("/") and "trk=" not in u for u in urls)
        assert all(r["full_name"] is None or "  " not in r["full_name"] for r in rows)


async def test_reimport_is_skipped_by_content_hash_and_force_reapplies(
        tmp_path: Path, db_url: str) -> None:
    url = db_url
    first = await run_import(SAMPLES / "01_contacts.csv", url)
    before = snapshot(url, first["job_id"])["profiles"]

    again = await run_import(SAMPLES / "01_contacts.csv", url)
    assert again["status"] == "skipped" and again["action"] == "skipped"
    assert again["duplicate_of"] == first["job_id"]
    assert again["read"] == again["inserted"] == 0

    copy = tmp_path / "renamed.csv"  # same content under another name: still recognised
    copy.write_bytes((SAMPLES / "01_contacts.csv").read_bytes())
    assert (await run_import(copy, url))["status"] == "skipped"

    forced = await run_import(SAMPLES / "01_contacts.csv", url, force=True)
    assert forced["status"] == "done" and forced["job_id"] != first["job_id"]
    assert forced["read"] == 200 and forced["inserted"] == 0 and forced["rejected"] == 12
    assert forced["updated"] + forced["unchanged"] == 188
    assert snapshot(url, forced["job_id"])["profiles"] == before  # same data, nothing doubled
