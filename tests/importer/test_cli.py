"""``bga import``: JSON report, exit status, --force, --show-rejected, the human report (on
SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graph.cli import app
from nodes.profile_import.store import ProfileStore, profiles_location
from tests.importer.helpers import SAMPLES

runner = CliRunner()


def bga(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout


def test_json_report_and_exit_status(tmp_path: Path, process_db_url: str) -> None:
    db = process_db_url
    code, out = bga("import", str(SAMPLES / "01_contacts.csv"), "--db", db, "--json")
    assert code == 0  # 12 rejected rows are not a failure of the job
    report = json.loads(out)
    assert {k: report[k] for k in ("read", "inserted", "updated", "unchanged", "rejected")} == {
        "read": 200, "inserted": 183, "updated": 2, "unchanged": 3, "rejected": 12}
    assert report["job_id"].startswith("imp_") and report["status"] == "done"

    code, out = bga("import", str(SAMPLES / "01_contacts.csv"), "--db", db, "--json")
    assert code == 0 and json.loads(out)["status"] == "skipped"
    code, out = bga("import", str(SAMPLES / "01_contacts.csv"), "--db", db, "--json", "--force")
    assert code == 0 and json.loads(out)["read"] == 200

    code, out = bga("import", "--show-rejected", report["job_id"], "--db", db, "--json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] == 12 and len(listed["rejected"]) == 12
    assert all(r["line"] > 1 and r["reasons"] for r in listed["rejected"])


def test_failed_job_exits_non_zero(tmp_path: Path, process_db_url: str) -> None:
    db = process_db_url
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    code, out = bga("import", str(empty), "--db", db, "--json")
    assert code == 1 and json.loads(out)["status"] == "failed"
    code, out = bga("import", str(tmp_path / "missing.csv"), "--db", db, "--json")
    report = json.loads(out)
    assert code == 1 and report["job_id"] is None and "no such file" in report["error"]


def test_usage_errors(process_db_url: str) -> None:
    db = process_db_url
    assert bga("import", "--db", db)[0] == 2  # neither a file nor --show-rejected
    assert bga("import", "--show-rejected", "imp_nope", "--db", db)[0] == 2
    with pytest.raises(FileNotFoundError):  # listing did not create a profiles database
        ProfileStore.open(profiles_location(db), create=False)
    bga("import", str(SAMPLES / "02_leads.jsonl"), "--db", db)
    assert bga("import", "--show-rejected", "imp_nope", "--db", db)[0] == 2


def test_human_report(tmp_path: Path, process_db_url: str) -> None:
    db = process_db_url
    code, out = bga("import", str(SAMPLES / "02_leads.jsonl"), "--db", db)
    assert code == 0
    # alone (without 01_contacts.csv before it) the known people of the leads file are new
    assert "accounting: read 120 = inserted 113 + updated 1 + unchanged 0 + rejected 6: ok" in out
    assert "rejected rows by reason: invalid e-mail 3, invalid JSON 2, not a JSON object 1" in out
    assert "bga import --show-rejected imp_" in out
    blank = (SAMPLES / "02_leads.jsonl").read_bytes().count(b"\n\n")
    assert f"lines: 0 header + 120 in records + {blank} blank = {120 + blank} lines; parser at " \
           f"line {120 + blank}; the file has {120 + blank}: ok" in out


def test_the_unclosed_quote_file_of_issue_14(tmp_path: Path) -> None:
    """A quote left open on line 2 costs that line only: 100,000 rows after it import."""
    path = tmp_path / "broken.csv"
    path.write_text("email,full_name,company\nbroken@example.com,\"Ann,Acme\n"
                    + "".join(f"p{i}@example.com,Person {i},Acme\n" for i in range(100_000)))
    code, out = bga("import", str(path), "--db", f"sqlite:///{tmp_path / 'state.db'}", "--json")
    report = json.loads(out)
    assert code == 0 and report["status"] == "done"
    assert (report["read"], report["inserted"], report["rejected"]) == (100_001, 100_000, 1)
    assert report["reasons"] == {"unclosed_quote": 1} and report["invariant_ok"]
    assert report["lines"]["ok"] and report["lines"]["consumed"] == 100_002
