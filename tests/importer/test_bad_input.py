"""Bad input: each case gives a clear error or quarantined rows with reasons, never a crash
or a half-imported file without a report (and the accounting always adds up)."""

from __future__ import annotations

import codecs
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from nodes.profile_import.job import ImportOptions
from nodes.profile_import.job_graph import run_job
from nodes.profile_import.store import ProfileStore, profiles_location
from state.backends import make_backend
from tests.importer.helpers import people_rows, run_import, store_of, write_csv

BIG = 50 * 1024 * 1024  # the 50 MB single field


@pytest.fixture
def url(db_url: str) -> str:
    """Every backend: SQLite, memory and PostgreSQL."""
    return db_url


def balanced(report: dict[str, Any]) -> bool:
    return report["invariant_ok"] and report["read"] == (
        report["inserted"] + report["updated"] + report["unchanged"] + report["rejected"])


async def one_slice(path: Path, url: str, batch_size: int) -> dict[str, Any]:
    """Run a job for exactly one batch (a deadline already passed), like a tick budget."""
    backend = make_backend(url)
    await backend.setup()
    store = ProfileStore.open(profiles_location(url))
    try:
        job = store.prepare(path).job
        return await run_job(store, backend, job, ImportOptions(batch_size=batch_size),
                             deadline=time.monotonic())
    finally:
        store.close()
        await backend.aclose()


async def resume(job_id: str, url: str) -> dict[str, Any]:
    backend = make_backend(url)
    await backend.setup()
    store = ProfileStore.open(profiles_location(url))
    try:
        job = store.job(job_id)
        assert job is not None
        return await run_job(store, backend, job)
    finally:
        store.close()
        await backend.aclose()


# -- whole-file problems: a clear error, nothing imported ------------------------------------------


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"  \n\r\n \n", "only whitespace"),
    (b"name,phone,company\nAda,+1 415 555 0132,Acme\n", "missing required column"),
    ("name,email\nJosé,jose@example.com\n".encode("latin-1"), "not UTF-8: byte 0xE9 on line 2"),
    ("name,email\nAda,ada@example.com\n".encode("utf-16"), "UTF-16"),
    (b"[{\"email\": \"a@example.com\"}", "ends before the closing ']'"),
])
async def test_unreadable_files_fail_clearly_and_import_nothing(
        tmp_path: Path, url: str, content: bytes, message: str) -> None:
    suffix = ".json" if content.startswith(b"[") else ".csv"
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    report = await run_import(path, url)
    assert report["status"] == "failed"
    assert message in report["error"]
    assert balanced(report)
    with store_of(url) as store:
        assert store.count_profiles() == 0
        assert store.job(report["job_id"])["status"] == "failed"  # type: ignore[index]


async def test_header_only_is_done_with_a_warning(tmp_path: Path, url: str) -> None:
    report = await run_import(write_csv(tmp_path / "h.csv", []), url)
    assert report["status"] == "done"
    assert report["read"] == 0 and balanced(report)
    assert report["warnings"] == ["the file has no data rows"]


async def test_broken_json_array_keeps_and_reports_rows_before_the_break(
        tmp_path: Path, url: str) -> None:
    good = [{"email": f"p{i}@example.com"} for i in range(5)]
    text = json.dumps(good)[:-1] + ', {"email": "x@example.com"} {"email": "y"}]'
    path = tmp_path / "broken.json"
    path.write_text(text)
    report = await run_import(path, url, batch_size=2)
    assert report["status"] == "failed"
    assert "expected ',' or ']'" in report["error"]
    # batches before the break were committed, and the report says so
    assert report["inserted"] == report["read"] >= 4 and balanced(report)


# -- row problems: quarantined with their line and reasons, the rest imported ----------------------


async def test_ragged_rows_are_quarantined(tmp_path: Path, url: str) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("name,email,company\n"
                    "Ada,ada@example.com,Acme\n"
                    "Bob,bob@example.com\n"                # one field short
                    "Cy,cy@example.com,Acme, Inc\n"        # a stray delimiter
                    "Di,di@example.com,Initech,,\n"        # trailing empty cells: tolerated
                    "\n"                                   # a blank line: skipped, not counted
                    "Ed,ed@example.com,Globex\n")
    report = await run_import(path, url)
    assert (report["read"], report["inserted"], report["rejected"]) == (5, 3, 2)
    with store_of(url) as store:
        rows = store.quarantined(report["job_id"])
    assert [(r["line"], r["codes"]) for r in rows] == [(3, ["ragged_row"]), (4, ["ragged_row"])]
    assert "row has 2 fields, the header has 3" in rows[0]["reasons"][0]
    assert "row has 4 fields" in rows[1]["reasons"][0]


async def test_a_nul_byte_quarantines_its_row_not_the_file(tmp_path: Path, url: str) -> None:
    rows = [["Nul\x00Name", "nul@example.com", "", "Co", "", "", ""],  # line 2: in the sniff
            *people_rows(100),
            ["Bad\x00", "bad@", "", "", "", "", ""]]                  # line 103
    report = await run_import(write_csv(tmp_path / "nul.csv", rows), url)
    assert report["status"] == "done" and report["read"] == 102 and balanced(report)
    assert report["reasons"]["nul_byte"] == 2 and report["lines"]["ok"]
    with store_of(url) as store:
        assert store.profile("email:nul@example.com") is None
        nul = [q for q in store.quarantined(report["job_id"]) if "nul_byte" in q["codes"]]
    assert [q["line"] for q in nul] == [2, 103]
    assert "a NUL byte at column 4" in nul[0]["reasons"][0]


async def test_json_escaped_nul_is_stored_on_every_backend(tmp_path: Path, url: str) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_text('{"email": "nul@example.com", "full_name": "Nul\\u0000Name"}\n')
    report = await run_import(path, url)
    assert (report["read"], report["inserted"]) == (1, 1)
    nul = "\ufffd" if url.startswith("postgresql://") else "\x00"  # PostgreSQL text has no NUL
    with store_of(url) as store:
        profile = store.profile("email:nul@example.com")
    assert profile is not None and profile["full_name"] == f"Nul{nul}Name"


async def test_invalid_json_lines_are_quarantined_with_line_numbers(
        tmp_path: Path, url: str) -> None:
    path = tmp_path / "leads.jsonl"
    path.write_text('{"email": "a@example.com"}\n'
                    '{"email": "b@example.com"\n'
                    '\n'
                    '[1, 2]\n'
                    '{"email": "not-an-email", "phone": "42"}\n'
                    '{"email": "c@example.com"}\n')
    report = await run_import(path, url)
    assert (report["read"], report["inserted"], report["rejected"]) == (5, 2, 3)
    with store_of(url) as store:
        rows = {r["line"]: r for r in store.quarantined(report["job_id"])}
    assert rows[2]["codes"] == ["invalid_json"] and rows[2]["raw"] == '{"email": "b@example.com"'
    assert rows[4]["codes"] == ["not_an_object"]
    assert rows[5]["codes"] == ["invalid_email", "invalid_phone"]  # every reason, not the first


async def test_stray_latin1_byte_mid_file_quarantines_only_that_row(
        tmp_path: Path, url: str) -> None:
    rows = people_rows(2_000)  # beyond the 64 KB encoding sniff
    path = write_csv(tmp_path / "mixed.csv", rows)
    with path.open("ab") as fh:
        fh.write("Zoë,zoe@example.com,,,,,\n".encode("latin-1"))
    report = await run_import(path, url)
    assert report["status"] == "done" and balanced(report)
    assert report["reasons"].get("invalid_encoding") == 1
    with store_of(url) as store:
        last = store.quarantined(report["job_id"], limit=10_000)[-1]
    assert last["line"] == 2_002 and "0xEB" in last["reasons"][0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
async def test_a_50_mb_field_is_quarantined_in_bounded_memory(
        tmp_path: Path, url: str, fmt: str) -> None:
    path = tmp_path / f"huge.{fmt}"
    blob = "x" * BIG
    if fmt == "csv":
        path.write_text(f"name,email,notes\nAda,ada@example.com,ok\nBig,big@example.com,{blob}\n"
                        "Cy,cy@example.com,ok\n")
    elif fmt == "jsonl":
        path.write_text('{"email": "ada@example.com"}\n'
                        f'{{"email": "big@example.com", "notes": "{blob}"}}\n'
                        '{"email": "cy@example.com"}\n')
    else:
        path.write_text('[{"email": "ada@example.com"},\n'
                        f' {{"email": "big@example.com", "notes": "{blob}"}},\n'
                        ' {"email": "cy@example.com"}]\n')
    del blob
    tracemalloc.start()
    try:
        report = await run_import(path, url)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["status"] == "done"
    assert (report["read"], report["inserted"], report["rejected"]) == (3, 2, 1)
    assert report["reasons"] == {"row_too_large": 1}
    assert peak < 40 * 1024 * 1024  # streamed: the 50 MB row was never held whole
    with store_of(url) as store:
        [row] = store.quarantined(report["job_id"])
    assert row["line"] == (3 if fmt == "csv" else 2)  # csv: the header is line 1
    assert "larger than 4,194,304 bytes" in row["reasons"][0]
    assert len(row["raw"]) < 5_000  # a prefix is kept for the person who fixes the file


async def test_fields_over_the_limits_are_rejected(tmp_path: Path, url: str) -> None:
    path = tmp_path / "long.csv"
    path.write_text("name,email,notes\n"
                    f"Ada,ada@example.com,\"{'y' * (2 * 1024 * 1024)}\"\n"  # > csv field limit
                    f"{'N' * 1_500},bob@example.com,ok\n"                   # > 1000 characters
                    "Cy,cy@example.com,ok\n")
    report = await run_import(path, url)
    assert report["reasons"] == {"field_too_large": 1, "field_too_long": 1}
    assert (report["read"], report["inserted"]) == (3, 1) and balanced(report)


# -- the file changes under the importer --------------------------------------------------------


async def test_file_that_disappears_between_slices_fails_with_a_report(
        tmp_path: Path, url: str) -> None:
    path = write_csv(tmp_path / "vanishing.csv", people_rows(500))
    first = await one_slice(path, url, batch_size=100)
    assert first["status"] == "running" and first["read"] == 100
    path.unlink()
    report = await resume(first["job_id"], url)
    assert report["status"] == "failed"
    assert "vanishing.csv disappeared after 100 rows" in report["error"]
    assert report["read"] == 100 and balanced(report)  # what was committed stays, reported


async def test_file_removed_while_open_is_read_to_the_end(tmp_path: Path, url: str) -> None:
    path = write_csv(tmp_path / "moved.csv", people_rows(300))

    removed: list[bool] = []

    def remove_after_first_batch(info: Any) -> None:
        if not removed:
            path.unlink()
            removed.append(True)

    backend = make_backend(url)
    await backend.setup()
    store = ProfileStore.open(profiles_location(url))
    try:
        job = store.prepare(path).job
        report = await run_job(store, backend, job, ImportOptions(batch_size=100),
                               on_batch=remove_after_first_batch)
    finally:
        store.close()
        await backend.aclose()
    assert report["status"] == "done" and report["read"] == 300 and balanced(report)
    assert any("removed during the import" in w for w in report["warnings"])


async def test_file_that_changes_between_slices_fails(tmp_path: Path, url: str) -> None:
    path = write_csv(tmp_path / "growing.csv", people_rows(300))
    first = await one_slice(path, url, batch_size=100)
    with path.open("a") as fh:
        fh.write("Late,late@example.com,,,,,\n")
    report = await resume(first["job_id"], url)
    assert report["status"] == "failed" and "changed since the import started" in report["error"]
    assert report["read"] == 100 and balanced(report)


# -- dialects and encodings that are fine ---------------------------------------------------------


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
async def test_sniffed_delimiters(tmp_path: Path, url: str, delimiter: str) -> None:
    rows = [["Ada Lovelace", "ada@example.com", "+44 20 7946 0958", "Analytical, Engines",
             "Countess", "London", ""]]
    path = write_csv(tmp_path / "d.csv", rows, delimiter=delimiter)
    report = await run_import(path, url)
    assert (report["read"], report["inserted"]) == (1, 1)
    with store_of(url) as store:
        profile = store.profile("email:ada@example.com")
    assert profile is not None and profile["company"] == "Analytical, Engines"
    assert profile["phone"] == "+442079460958"


async def test_bom_and_multiline_quoted_fields(tmp_path: Path, url: str) -> None:
    path = tmp_path / "notes.csv"
    path.write_bytes(codecs.BOM_UTF8 + (
        b"Name,Email,Notes\r\n"
        b'Ada,ada@example.com,"first line\r\nsecond line"\r\n'
        b"Bob,bob@,x\r\n"))
    report = await run_import(path, url, batch_size=1)
    assert (report["read"], report["inserted"], report["rejected"]) == (2, 1, 1)
    with store_of(url) as store:
        ada = store.profile("email:ada@example.com")
        [bad] = store.quarantined(report["job_id"])
    assert ada is not None and ada["full_name"] == "Ada"  # the BOM is not part of "Name"
    assert ada["extra"] == {"notes": "first line\r\nsecond line"}
    assert bad["line"] == 4  # the quoted field spans lines 2-3
