"""The local trace store on its own: sequence numbers, pruning, quarantine, on every backend;
and what only PostgreSQL needs (concurrent handles, tables without the migration, NULs,
connection errors, a session that dies)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import Any

import pytest

from state import SharedState
from state.traces import PostgresTraceStore, QuarantinedRecord, TraceStore, open_store
from tests.conftest import with_schema

SECRET = "lsv2_pt_0123456789abcdef_trace_store_test"


def run_row(i: int, **extra: Any) -> dict[str, Any]:
    """A finished run as the local tracer records it."""
    return {"id": f"run-{i}", "trace_id": f"trace-{i // 3}", "parent_run_id": None,
            "project": "local", "name": "job", "run_type": "chain", "start_time": 1000.0 + i,
            "end_time": 1000.25 + i, "status": "success", "error": None, "tags": ["t", str(i)],
            "metadata": {"tick": i, "nested": {"ok": True}}, "prompt_tokens": 7,
            "completion_tokens": 3, "total_tokens": 10, "total_cost": 0.5,
            "first_token_time": None, "recorded_at": 2000.0 + i, **extra}


async def open_state(url: str) -> TraceStore:
    """A trace store of a state database that ``SharedState.open`` has created."""
    async with SharedState.open(url, producer="tests"):
        pass
    return open_store(url)


async def test_rows_round_trip_in_seq_order_and_prune_keeps_the_newest(db_url: str) -> None:
    async with await open_state(db_url) as store:
        assert await store.first_seq() is None
        assert await store.prune(keep_rows=3) == 0
        assert await store.append([]) == 0
        assert await store.append([run_row(i) for i in range(10)]) == 10
        rows = await store.read_after(0, 100)
        seqs = [r["seq"] for r in rows]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10
        assert [r["id"] for r in rows] == [f"run-{i}" for i in range(10)]
        first = rows[0]
        assert first["tags"] == ["t", "0"] and first["metadata"] == {"tick": 0,
                                                                    "nested": {"ok": True}}
        assert (first["start_time"], first["end_time"]) == (1000.0, 1000.25)
        assert first["total_tokens"] == 10 and first["total_cost"] == 0.5
        assert first["parent_run_id"] is None and first["first_token_time"] is None
        assert [r["id"] for r in await store.read_after(seqs[2], 2)] == ["run-3", "run-4"]

        assert await store.prune(keep_rows=20) == 0
        assert await store.prune(keep_rows=3) == 7
        assert await store.first_seq() == seqs[7]
        assert [r["seq"] for r in await store.read_after(0, 100)] == seqs[7:]
        await store.append([run_row(10)])
        [new] = await store.read_after(seqs[-1], 100)
        assert new["seq"] > seqs[-1] and new["id"] == "run-10"  # numbers are never reused
        assert await store.prune(keep_rows=3) == 1


async def test_a_second_handle_sees_the_rows_of_the_first(db_url: str) -> None:
    async with await open_state(db_url) as a, open_store(db_url) as b:
        await a.append([run_row(1)])
        assert [r["id"] for r in await b.read_after(0, 10)] == ["run-1"]


async def test_quarantine_is_idempotent_redacted_capped_and_newest_first(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("state.backends.traces.KEEP_QUARANTINED", 4)
    async with await open_state(db_url) as store:
        await store.quarantine([], at=1.0)
        assert await store.quarantined() == []
        long_record = f'{{"api_key": "{SECRET}", "pad": "{"x" * 5000}"}}'
        first = QuarantinedRecord("api:p", "run:1", f"bad start_time, key {SECRET}",
                                  long_record)
        await store.quarantine([first], at=10.0)
        again = QuarantinedRecord("api:p", "run:1", "another reason", None)
        await store.quarantine([again, first], at=11.0)  # a retried chunk: nothing changes
        [kept] = await store.quarantined()
        assert kept["reason"].startswith("bad start_time") and SECRET not in kept["reason"]
        assert kept["at"] == 10.0
        assert SECRET not in kept["record"] and len(kept["record"]) <= 2000
        # same key from another source is another record
        await store.quarantine([QuarantinedRecord("file:x", "run:1", "other", None)], at=12.0)
        assert [q["source"] for q in await store.quarantined()] == ["file:x", "api:p"]

        # ties on ``at`` come in byte order of the key, whatever the database's collation
        await store.quarantine([QuarantinedRecord("s", k, "r") for k in ("a", "_", "B")], at=20.0)
        assert [q["key"] for q in await store.quarantined(limit=3)] == ["B", "_", "a"]
        # capped at KEEP_QUARANTINED: the oldest went
        assert [(q["source"], q["key"]) for q in await store.quarantined()] == [
            ("s", "B"), ("s", "_"), ("s", "a"), ("file:x", "run:1")]
        assert [q["key"] for q in await store.quarantined(limit=1)] == ["B"]


# -- PostgreSQL only -----------------------------------------------------------------------


@pytest.mark.postgres
async def test_handles_appending_at_once_get_distinct_seqs_and_a_cursor_misses_none(
        postgres_url: str) -> None:
    writers = [await open_state(postgres_url) for _ in range(3)]
    reader = open_store(postgres_url)
    done = asyncio.Event()
    seen: list[dict[str, Any]] = []

    async def write(w: int, store: TraceStore) -> None:
        for batch in range(15):
            await store.append([run_row(i, id=f"w{w}-{batch}-{i}") for i in range(4)])

    async def follow() -> None:  # the bridge's way: a cursor that only moves forward
        cursor = 0
        while True:
            finished = done.is_set()
            rows = await reader.read_after(cursor, 7)
            seen.extend(rows)
            if rows:
                cursor = rows[-1]["seq"]
            elif finished:
                return
            else:
                await asyncio.sleep(0)

    try:
        following = asyncio.create_task(follow())
        await asyncio.gather(*(write(w, s) for w, s in enumerate(writers)))
        done.set()
        await following
        stored = await reader.read_after(0, 1_000)
    finally:
        for store in (*writers, reader):
            await store.aclose()
    assert len(stored) == 3 * 15 * 4
    assert len({r["seq"] for r in stored}) == len(stored)
    assert {r["id"] for r in stored} == {f"w{w}-{b}-{i}" for w in range(3) for b in range(15)
                                         for i in range(4)}
    assert [r["seq"] for r in seen] == [r["seq"] for r in stored]  # none skipped, none twice


@pytest.mark.postgres
async def test_store_makes_its_tables_before_the_backend_has_and_setup_still_runs(
        postgres_url: str) -> None:
    stores = [open_store(postgres_url) for _ in range(3)]
    try:  # three handles racing to make the tables on an empty schema
        assert await asyncio.gather(*(s.append([run_row(i)]) for i, s in enumerate(stores))) \
            == [1, 1, 1]
        await stores[0].quarantine([QuarantinedRecord("s", "k", "r")], at=1.0)
    finally:
        for store in stores:
            await store.aclose()
    async with SharedState.open(postgres_url, producer="tests") as shared:  # migrates
        assert await shared.get_agents() == []
    async with open_store(postgres_url) as store:
        assert sorted(r["id"] for r in await store.read_after(0, 10)) == [
            "run-0", "run-1", "run-2"]
        assert [q["key"] for q in await store.quarantined()] == ["k"]


@pytest.mark.postgres
async def test_nul_characters_are_replaced_not_fatal(postgres_url: str) -> None:
    async with await open_state(postgres_url) as store:
        await store.append([run_row(1, name="a\x00b", error="boom\x00", tags=["x\x00"])])
        [row] = await store.read_after(0, 10)
        assert (row["name"], row["error"]) == ("a\ufffdb", "boom\ufffd")
        assert row["tags"] == ["x\x00"]  # JSON text escapes it: kept as it was
        await store.quarantine([QuarantinedRecord("s", "k\x00", "r\x00", "rec\x00")], at=1.0)
        [q] = await store.quarantined()
        assert (q["key"], q["reason"], q["record"]) == ("k\ufffd", "r\ufffd", "rec\ufffd")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_errors_name_the_server_but_not_the_password() -> None:
    url = f"postgresql://bob:s3cret-pw@127.0.0.1:{closed_port()}/nowhere"
    store = open_store(url)
    assert isinstance(store, PostgresTraceStore)
    with pytest.raises(ConnectionError) as err:
        await store.read_after(0, 10)
    assert "bob:[REDACTED]@127.0.0.1" in str(err.value)
    assert "s3cret-pw" not in str(err.value)
    await store.aclose()


@pytest.mark.postgres
async def test_a_store_whose_session_was_killed_reconnects(postgres_url: str) -> None:
    import psycopg

    app = f"bga_trace_{uuid.uuid4().hex[:12]}"
    await (await open_state(postgres_url)).aclose()
    async with open_store(f"{postgres_url}&application_name={app}") as store:
        await store.append([run_row(1)])
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            cur = await admin.execute(  # and wait (up to 10 s) until it has ended
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000)) FROM "
                "pg_stat_activity WHERE application_name = %s", (app,))
            assert (await cur.fetchone())[0] == 1
        with pytest.raises(psycopg.OperationalError):
            await store.read_after(0, 10)  # the call that finds the session gone fails ...
        await store.append([run_row(2)])  # ... and the next one has a new session
        assert [r["id"] for r in await store.read_after(0, 10)] == ["run-1", "run-2"]


@pytest.mark.postgres
async def test_a_schema_that_does_not_exist_is_a_clear_error(postgres_url: str) -> None:
    base = postgres_url.split("?", 1)[0]
    async with open_store(with_schema(base, f"missing_{uuid.uuid4().hex[:8]}")) as store:
        with pytest.raises(ValueError, match="no schema to keep traces in"):
            await store.first_seq()
