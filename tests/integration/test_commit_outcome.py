"""A write whose commit reply is lost neither wedges the handle nor counts twice (PostgreSQL).

A TCP proxy in front of the server cuts the connection right after it forwarded the message
that commits an append (the server commits, the client never hears) or instead of forwarding it
(nothing commits). That message is a COMMIT, or, for a small append, its one statement on an
autocommit connection (``state.backends.postgres.APPEND_ONE_STATEMENT``).
Either way the handle looks up its stream's committed sequence before writing again: the
first write is acknowledged, the second refused (so the caller retries), and every later write
goes through (before: ``UniqueViolation bga_inbox_pkey`` forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from urllib.parse import urlsplit, urlunsplit

import pytest

from state import SharedState

WRITES = 30
CUT_AT = (5, 17)
COMMITS = (b"COMMIT", b"INSERT INTO bga_inbox")  # what commits an append (see the docstring)
# the one-statement append is prepared: after its Parse (text and name) the connection sends
# only a Bind naming the statement, which commits it as well
PREPARED_APPEND = re.compile(rb"P[\s\S]{4}([^\x00]+)\x00[^\x00]*INSERT INTO bga_inbox")


class CommitCutter:
    """asyncio TCP proxy on a free localhost port; ``arm(mode)`` cuts the next COMMIT."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode: str | None = None
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> CommitCutter:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def arm(self, mode: str) -> None:
        assert mode in ("after_commit", "instead_of_commit")
        self.mode = mode

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        s_reader, s_writer = await asyncio.open_connection(*self.target)
        cut = asyncio.Event()
        binds: list[re.Pattern[bytes]] = []  # of this connection's prepared append

        def commits(chunk: bytes) -> bool:
            binds.extend(re.compile(rb"B[\s\S]{4}\x00" + re.escape(name) + rb"\x00")
                         for name in PREPARED_APPEND.findall(chunk))
            return any(m in chunk for m in COMMITS) or any(b.search(chunk) for b in binds)

        async def upstream() -> None:
            while not cut.is_set() and (chunk := await c_reader.read(65536)):
                if commits(chunk) and self.mode is not None:
                    mode, self.mode = self.mode, None
                    self.cuts += 1
                    if mode == "after_commit":
                        s_writer.write(chunk)  # the server gets it and commits ...
                        await s_writer.drain()
                    cut.set()  # ... the client never hears back
                    break
                s_writer.write(chunk)
                await s_writer.drain()

        async def downstream() -> None:
            while not cut.is_set() and (chunk := await s_reader.read(65536)):
                if cut.is_set():
                    break
                c_writer.write(chunk)
                await c_writer.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        with contextlib.suppress(ConnectionError, OSError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        for w in (c_writer, s_writer):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))


@pytest.mark.parametrize("mode", ["after_commit", "instead_of_commit"])
async def test_a_lost_commit_reply_neither_wedges_nor_doubles(postgres_url: str, mode: str):
    parts = urlsplit(postgres_url)
    proxy = await CommitCutter(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    try:
        async with SharedState.open(_through(postgres_url, proxy.port), producer="w") as shared:
            refused = 0
            for i in range(WRITES):
                if i in CUT_AT:
                    proxy.arm(mode)
                metric = {"source_agent": "w", "name": "n", "value": float(i)}
                try:
                    await shared.add_performance_metric(metric)
                except Exception:  # nothing committed: the caller retries, as a worker does
                    refused += 1
                    await shared.add_performance_metric(metric)
            assert proxy.cuts == len(CUT_AT)
            assert refused == (0 if mode == "after_commit" else len(CUT_AT))
            await shared.flush()
            [series] = (await shared.get_performance_summary(hours=1))["series"].values()
            assert series["count"] == WRITES  # none lost, none doubled
            assert series["mean"] == sum(range(WRITES)) / WRITES
            assert await shared.backend.committed_seq(shared._stream) == WRITES
    finally:
        await proxy.close()


@pytest.mark.parametrize("committed", [True, False])
async def test_every_backend_looks_up_an_unknown_outcome(
    db_url: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """The same rule on every backend, with the lost reply injected into ``append``."""
    async with SharedState.open(db_url, producer="w") as shared:
        real = shared.backend.append
        failures = iter([4, 9])
        at = {"next": next(failures)}
        calls = {"n": 0}

        async def flaky(stream: int, rows) -> None:
            calls["n"] += 1
            if calls["n"] == at["next"]:
                at["next"] = next(failures, -1)
                if committed:
                    await real(stream, rows)
                raise ConnectionError("connection lost before the reply")
            await real(stream, rows)

        monkeypatch.setattr(shared.backend, "append", flaky)
        # every write through the writer (SQLite would commit one at a time in the call:
        # that path's own failures are the next test's)
        monkeypatch.setattr(shared.backend, "append_now", lambda stream, rows: False)
        refused = 0
        for i in range(12):
            metric = {"source_agent": "w", "name": "n", "value": float(i)}
            try:
                await shared.add_performance_metric(metric)
            except ConnectionError:
                refused += 1
                await shared.add_performance_metric(metric)
        assert refused == (0 if committed else 2)
        [series] = (await shared.get_performance_summary(hours=1))["series"].values()
        assert series["count"] == 12


@pytest.mark.parametrize("committed", [True, False])
async def test_a_direct_commit_that_fails_leaves_the_write_to_the_writer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """SQLite commits a lone write in the call (``SharedState._commit_now``). If that raises,
    whether or not it committed, the writer takes the write over with the same sequence
    number: counted once either way, and the caller never sees the error."""
    async with SharedState.open(sqlite_url, producer="w") as shared:
        real_now = shared.backend.append_now
        real = shared.backend.append
        seen = {"now": 0, "writer": 0}

        def flaky_now(stream: int, rows) -> bool:
            seen["now"] += 1
            if seen["now"] in (3, 7):
                if committed:
                    assert real_now(stream, rows)
                raise OSError("the reply was lost")
            return real_now(stream, rows)

        async def counted(stream: int, rows) -> None:
            seen["writer"] += 1
            await real(stream, rows)

        monkeypatch.setattr(shared.backend, "append_now", flaky_now)
        monkeypatch.setattr(shared.backend, "append", counted)
        for i in range(12):
            await shared.add_performance_metric({"source_agent": "w", "name": "n",
                                                 "value": float(i)})
        # the writer wrote the first (it opens the stream) and the two that failed, only those
        assert seen["writer"] == 3
        assert seen["now"] >= 10
        assert await shared.backend.committed_seq(shared._stream) == 12
        await shared.flush()
        [series] = (await shared.get_performance_summary(hours=1))["series"].values()
        assert series["count"] == 12  # none lost, none doubled
        assert series["mean"] == sum(range(12)) / 12
