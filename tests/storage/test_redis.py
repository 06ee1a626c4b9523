"""The Redis backend's own rules: its URLs, its durability warning, isolation by key prefix,
all-or-nothing appends, and the parts it does not have (the outbox, the importer's tables),
each refused with a clear message. The rest runs in every backend-parametrized test."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from state.backends import make_backend, parse_url
from state.backends.redisdb import RedisBackend, durability
from state.backends.syncdb import open_profiles
from tests.conftest import redis_prefix


def test_redis_urls_name_the_db_number_and_a_prefix() -> None:
    plain = parse_url("redis://127.0.0.1:6379")
    assert (plain.dialect, plain.db, plain.name, plain.key_prefix) == ("redis", 0, "", "bga:0::")
    tls = parse_url("rediss://user:secret@cache.example:6380/3?prefix=team-a")
    assert (tls.dialect, tls.db, tls.key_prefix) == ("redis", 3, "bga:3:team-a:")


@pytest.mark.parametrize(("url", "needle"), [
    ("redis://127.0.0.1:6379/zero", "database number"),
    ("redis://127.0.0.1:6379/0?prefix=a*b", "prefix must be"),
    ("redis:///0", "has no host"),
])
def test_a_bad_redis_url_says_what_is_wrong(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_url(url)


def test_the_durability_line_says_what_each_setting_can_lose() -> None:
    assert durability({"appendonly": "yes", "appendfsync": "always", "save": ""}) is None
    assert "last second" in (durability({"appendonly": "yes", "appendfsync": "everysec"}) or "")
    assert "~30 s" in (durability({"appendonly": "yes", "appendfsync": "no"}) or "")
    assert "since the last snapshot" in (durability({"appendonly": "no", "save": "3600 1"}) or "")
    off = durability({"appendonly": "no", "appendfsync": "everysec", "save": ""}) or ""
    assert "loses the whole state" in off and "appendfsync always" in off


@pytest.fixture
async def redis_backend() -> AsyncIterator[RedisBackend]:
    with redis_prefix() as url:
        backend = make_backend(url)
        assert isinstance(backend, RedisBackend)
        await backend.setup()
        try:
            yield backend
        finally:
            await backend.aclose()


async def test_open_warns_once_when_the_server_keeps_nothing_on_disk(
        caplog: pytest.LogCaptureFixture) -> None:
    RedisBackend._warned.clear()
    with redis_prefix() as url, caplog.at_level(logging.WARNING, logger="bga.redis"):
        for _ in range(2):
            backend = make_backend(url)
            await backend.setup()
            config = {str(k): str(v) for name in ("appendonly", "appendfsync", "save")
                      for k, v in (await backend.client.config_get(name)).items()}
            await backend.aclose()
    expected = durability(config)
    lines = [r.getMessage() for r in caplog.records if r.name == "bga.redis"]
    if expected is None:
        assert lines == []
    else:  # one line for two opens, naming the server, never the prefix's password
        assert len(lines) == 1 and lines[0].startswith(expected), lines


async def test_two_prefixes_on_one_server_do_not_see_each_other(
        redis_backend: RedisBackend) -> None:
    with redis_prefix() as other_url:
        other = make_backend(other_url)
        await other.setup()
        try:
            stream = await redis_backend.open_stream("a")
            await redis_backend.append(stream, [(1, "metric", b"{}"), (2, "metric", b"{}")])
            assert await redis_backend.pending_count() == 2
            assert await other.pending_count() == 0 and await other.is_empty()
        finally:
            await other.aclose()


async def test_a_batch_with_a_used_sequence_number_changes_nothing(
        redis_backend: RedisBackend) -> None:
    stream = await redis_backend.open_stream("a")
    await redis_backend.append(stream, [(1, "metric", b"1"), (2, "metric", b"2")])
    with pytest.raises(ValueError, match="duplicate inbox sequence number 2"):
        await redis_backend.append(stream, [(3, "metric", b"3"), (2, "metric", b"again")])
    with pytest.raises(ValueError, match="duplicate inbox sequence number 1"):
        await redis_backend.append(stream, [(1, "metric", b"again")])
    assert await redis_backend.committed_seq(stream) == 2
    rows = await redis_backend.read_inbox(10)
    assert [(r.seq, r.payload) for r in rows] == [(1, b"1"), (2, b"2")]
    await redis_backend.delete_folded({stream: 1})
    assert [r.seq for r in await redis_backend.read_inbox(10)] == [2]
    assert [r.seq for r in await redis_backend.read_inbox(10, after=(stream, 1))] == [2]
    await redis_backend.delete_folded({stream: 2})
    assert await redis_backend.pending_count() == 0


async def test_what_redis_does_not_have_is_refused_by_name(redis_backend: RedisBackend) -> None:
    with pytest.raises(ValueError, match="profile importer needs SQL tables"):
        open_profiles(redis_backend.profiles_location)


async def test_drop_everything_leaves_no_key_of_the_prefix(redis_backend: RedisBackend) -> None:
    stream = await redis_backend.open_stream("a")
    await redis_backend.append(stream, [(1, "metric", b"{}")])
    assert await redis_backend.drop_everything() > 0
    assert [k async for k in redis_backend.client.scan_iter(
        match=redis_backend.k.prefix + "*")] == []
