"""Secrets in imported files (issue 15): a column whose header looks like a credential is
dropped, free-form columns and rejected rows are redacted, and ``bga import --show-rejected``
prints nothing secret; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from graph.cli import app
from tests.integration.test_secret_leaks import assert_absent, stored_bytes

runner = CliRunner()
API_KEY = "k3Yq9vXz2LmP8rT4wQ7s"
PASSWORD = "Hunter2Correct7Horse"
TOKEN = "Tq8mZr3Kx9Lp2Wv6Ys4N"
STRIPE = "sk_live_9aXbYcZd8eWf7gVh6i"
SLACK = "xoxb-1234567890-Qw9Er8Ty7Ui6"
CORES = [API_KEY, PASSWORD, TOKEN, STRIPE.removeprefix("sk_live_"),
         SLACK.removeprefix("xoxb-1234567890-")]


def write_file(path: Path) -> Path:
    path.write_text(
        "full_name,email,api_key,Password,session-token,notes\n"
        f"Ann Lee,ann@example.com,{API_KEY},{PASSWORD},{TOKEN},call {STRIPE} later\n"
        f"Bob Ray,not-an-email,{API_KEY},{PASSWORD},{TOKEN},slack {SLACK}\n"
        f"Cy Poe,cy@example.com,{API_KEY},{PASSWORD}\n"  # ragged: quarantined, cells masked
    )
    return path


def bga(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_secret_columns_are_dropped_and_rejected_rows_redacted(tmp_path: Path,
                                                               process_db_url: str) -> None:
    db = process_db_url
    code, out = bga("import", str(write_file(tmp_path / "people.csv")), "--db", db, "--json")
    report = json.loads(out)
    assert code == 0 and (report["inserted"], report["rejected"]) == (1, 2)
    assert_absent(CORES[:4], "the import report", out)

    code, listed = bga("import", "--show-rejected", report["job_id"], "--db", db, "--json")
    assert code == 0
    rows = json.loads(listed)["rejected"]
    assert len(rows) == 2
    bob = next(r for r in rows if "Bob Ray" in r["raw"])
    assert "[REDACTED]" in bob["raw"] and "not-an-email" in bob["raw"]  # still useful
    assert_absent(CORES, "bga import --show-rejected --json", listed)
    code, human = bga("import", "--show-rejected", report["job_id"], "--db", db)
    assert code == 0 and "Bob" in human and "[REDACTED]" in human
    assert_absent(CORES, "bga import --show-rejected", human)

    # the stored profile keeps name, e-mail and a redacted note; no secret column at all
    stored = stored_bytes(db)
    assert b"ann@example.com" in stored
    assert_absent(CORES, "the profiles database", stored)
