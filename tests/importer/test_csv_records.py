"""CSV read record by record against the file: csv-spectrum, unclosed quotes, duplicate headers,
CR-only line breaks, Excel's ``sep=`` line, and the line accounting of every report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodes.profile_import.readers import Limits, RawRecord, discover, open_reader
from nodes.profile_import.store import line_check
from tests.importer.helpers import run_import, snapshot, store_of

SPECTRUM = Path(__file__).resolve().parent / "data" / "csv_spectrum"
CASES = sorted(p.stem for p in SPECTRUM.glob("*.csv"))


def read_all(path: Path, limits: Limits | None = None) -> tuple[list[RawRecord], int, int]:
    """Every record of a CSV file, with the parser's final line and skipped blank lines."""
    limits = limits or Limits()
    with path.open("rb") as fh:
        layout = discover(fh, path, limits, require_identity=False)
        reader = open_reader(fh, layout, layout.data_offset, layout.data_line, limits)
        records: list[RawRecord] = []
        while not reader.eof:
            records.extend(reader.read(3))
        assert layout.data_line + sum(r.lines for r in records) + reader.skipped == reader.line
        return records, reader.line, reader.skipped


def test_the_spectrum_is_complete() -> None:
    assert {"comma_in_quotes", "empty", "empty_crlf", "escaped_quotes", "json", "newlines",
            "newlines_crlf", "quotes_and_newlines", "simple", "simple_crlf", "utf8",
            "location_coordinates"} <= set(CASES)
    assert b"\r\n" in (SPECTRUM / "newlines_crlf.csv").read_bytes()


@pytest.mark.parametrize("case", CASES)
def test_csv_spectrum(case: str) -> None:
    expected = json.loads((SPECTRUM / f"{case}.json").read_text(encoding="utf-8"))
    records, line, _ = read_all(SPECTRUM / f"{case}.csv")
    assert [r.errors for r in records] == [[] for _ in expected]
    assert [r.data for r in records] == expected
    raw = (SPECTRUM / f"{case}.csv").read_bytes()
    assert line == raw.count(b"\n") + (not raw.endswith(b"\n"))  # every line consumed


def csv_file(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


def good_rows(n: int, start: int = 0) -> str:
    return "".join(f"p{i}@example.com,Person {i},Co {i % 7}\n" for i in range(start, start + n))


# -- unclosed quotes -----------------------------------------------------------------------------


async def test_an_unclosed_quote_sets_aside_its_line_and_the_rest_imports(
        tmp_path: Path, db_url: str) -> None:
    path = csv_file(tmp_path / "broken.csv", "email,full_name,company\n"
                    'broken@example.com,"Ann,Acme\n' + good_rows(2_000))
    report = await run_import(path, db_url, batch_size=300)
    assert report["status"] == "done" and report["invariant_ok"]
    assert (report["read"], report["inserted"], report["rejected"]) == (2_001, 2_000, 1)
    assert report["reasons"] == {"unclosed_quote": 1}
    assert report["lines"]["ok"] and report["lines"]["in_file"] == 2_002
    with store_of(db_url) as store:
        [row] = store.quarantined(report["job_id"])
        assert store.count_profiles() == 2_000 and store.profile("email:p1999@example.com")
    assert row["line"] == 2 and row["raw"] == 'broken@example.com,"Ann,Acme'
    assert "still open after 1,000 lines" in row["reasons"][0]


def test_a_quote_open_at_the_end_of_the_file(tmp_path: Path) -> None:
    path = csv_file(tmp_path / "eof.csv", "email,name\n" + good_rows(3).replace(",Co", "")
                    + 'last@example.com,"Ann')  # no line break at the end either
    records, line, _ = read_all(path)
    assert [r.data["email"] if r.data else None for r in records] == [
        "p0@example.com", "p1@example.com", "p2@example.com", None]
    assert records[-1].line == 5 and records[-1].errors[0][0] == "unclosed_quote"
    assert "at the end of the file" in records[-1].errors[0][1] and line == 5


def test_an_unterminated_last_line_without_quotes_is_a_row(tmp_path: Path) -> None:
    path = csv_file(tmp_path / "tail.csv", "email,name\na@example.com,Ann")
    records, line, _ = read_all(path)
    assert [r.data for r in records] == [{"email": "a@example.com", "name": "Ann"}]
    assert line == 2


def test_two_stray_quotes_do_not_swallow_the_rows_between_them(tmp_path: Path) -> None:
    path = csv_file(tmp_path / "stray.csv", "email,full_name,company\n"
                    'a@example.com,"Ann,Acme\n' + good_rows(4) +
                    'b@example.com,"Bob,Initech\n' + good_rows(2, start=10))
    records, _, _ = read_all(path)
    bad = [(r.line, r.errors[0][0]) for r in records if r.data is None]
    assert bad == [(2, "unclosed_quote"), (7, "unclosed_quote")]
    assert [r.data["email"] for r in records if r.data] == [
        "p0@example.com", "p1@example.com", "p2@example.com", "p3@example.com",
        "p10@example.com", "p11@example.com"]


def test_a_well_formed_quoted_field_may_span_lines(tmp_path: Path) -> None:
    path = csv_file(tmp_path / "notes.csv",
                    'email,notes\na@example.com,"one\ntwo, ""three""\n\nfour"\nb@example.com,x\n')
    records, line, _ = read_all(path)
    assert [r.data for r in records] == [{"email": "a@example.com",
                                          "notes": 'one\ntwo, "three"\n\nfour'},
                                         {"email": "b@example.com", "notes": "x"}]
    assert [r.lines for r in records] == [4, 1] and line == 6


def test_the_line_and_byte_limits_of_a_quoted_field(tmp_path: Path) -> None:
    text = 'email,notes\na@example.com,"' + "line\n" * 20 + '"\nb@example.com,x\n'
    path = csv_file(tmp_path / "long.csv", text)
    records, _, _ = read_all(path, Limits(max_record_lines=50))
    assert [r.errors for r in records] == [[], []]  # 21 lines: within 50
    records, _, _ = read_all(path, Limits(max_record_lines=10))
    assert records[0].errors[0][0] == "unclosed_quote" and records[0].line == 2
    assert records[-1].data == {"email": "b@example.com", "notes": "x"}
    records, _, _ = read_all(path, Limits(max_record_bytes=64))
    assert records[0].errors[0][0] == "unclosed_quote"


async def test_batches_that_end_inside_a_reread_region_commit_the_same(
        tmp_path: Path, db_url: str) -> None:
    body = ("email,full_name,company\n" + good_rows(40) + 'x@example.com,"X,Y\n'
            + good_rows(60, start=100) + 'z@example.com,Z,"open\n')
    one = await run_import(csv_file(tmp_path / "a.csv", body), db_url, batch_size=5_000)
    many = await run_import(csv_file(tmp_path / "b.csv", body + "\n"), db_url, batch_size=7,
                            force=True)
    assert (one["read"], one["rejected"]) == (many["read"], many["rejected"]) == (102, 2)
    assert snapshot(db_url, one["job_id"])["quarantine"] == \
        snapshot(db_url, many["job_id"])["quarantine"]
    assert one["lines"]["ok"] and many["lines"]["ok"] and many["lines"]["blank"] == 1


# -- headers, line breaks, delimiters -----------------------------------------------------------


async def test_a_duplicated_column_keeps_both_values(tmp_path: Path, db_url: str) -> None:
    path = csv_file(tmp_path / "dup.csv", "email,full_name,email,Notes,notes\n"
                                          "first@example.com,Ann,second@example.com,a,b\n")
    report = await run_import(path, db_url)
    assert (report["read"], report["inserted"]) == (1, 1)
    with store_of(db_url) as store:
        ann = store.profile("email:first@example.com")
    assert ann is not None
    assert ann["extra"] == {"email_2": "second@example.com", "notes": "a", "notes_2": "b"}
    assert any("duplicate column 'email' (columns 1 and 3)" in w and "'email_2'" in w
               for w in report["warnings"])
    assert any("duplicate column 'notes'" in w for w in report["warnings"])


async def test_cr_only_line_breaks(tmp_path: Path, db_url: str) -> None:
    path = tmp_path / "mac.csv"
    path.write_bytes(b'email,full_name,notes\ra@example.com,Ann,"two\rlines"\r'
                     b"b@example.com,Bob,x\r\rc@example.com,Cy,y")
    report = await run_import(path, db_url)
    assert report["status"] == "done", report.get("error")
    assert (report["read"], report["inserted"]) == (3, 3)
    assert report["lines"]["ok"] and report["lines"]["in_file"] == 6
    with store_of(db_url) as store:
        ann = store.profile("email:a@example.com")
    assert ann is not None and ann["extra"] == {"notes": "two\rlines"}


async def test_excel_sep_line_sets_the_delimiter(tmp_path: Path, db_url: str) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfsep=;\r\nemail;full_name;company\r\n"
                     b"a@example.com;Ann, Jr.;Acme, Inc\r\nb@;Bob;X\r\n")
    report = await run_import(path, db_url)
    assert (report["read"], report["inserted"], report["rejected"]) == (2, 1, 1)
    with store_of(db_url) as store:
        ann = store.profile("email:a@example.com")
        [bad] = store.quarantined(report["job_id"])
    assert ann is not None and (ann["full_name"], ann["company"]) == ("Ann, Jr.", "Acme, Inc")
    assert bad["line"] == 4  # the sep= line is line 1
    assert report["lines"]["ok"] and report["lines"]["header"] == 2
    assert "'sep=' first line" in report["warnings"][0]


# -- line accounting -----------------------------------------------------------------------------


def _job(**kw: Any) -> dict[str, Any]:
    job = {"layout": {"format": "csv", "data_line": 1, "dialect": {"lineterminator": "\n"}},
           "record_lines": 10, "blank_lines": 2, "line_no": 13, "file_lines_lf": 13,
           "file_lines_cr": 1}
    return {**job, **kw}


def test_line_check_finds_lines_nobody_accounted_for() -> None:
    assert line_check(_job(), complete=True)["ok"]  # type: ignore[index]
    assert not line_check(_job(record_lines=9), complete=True)["ok"]  # type: ignore[index]
    # the parser stopped early: fine for a paused job, not for a finished one
    early = _job(line_no=12, record_lines=9)
    assert line_check(early, complete=False)["ok"]  # type: ignore[index]
    assert not line_check(early, complete=True)["ok"]  # type: ignore[index]
    cr = _job(layout={"format": "csv", "data_line": 1, "dialect": {"lineterminator": "\r"}})
    assert not line_check(cr, complete=True)["ok"]  # type: ignore[index]
    assert line_check(_job(layout={"format": "json"}), complete=True) is None
    assert line_check(_job(file_lines_lf=None), complete=True) is None  # a job from before
