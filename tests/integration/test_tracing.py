"""LangSmith tracing never breaks a tick, and a LangSmith key never lands in the state.

``bga tick`` runs as a child process so its exit (where LangSmith flushes pending traces to
the unreachable endpoint, ~12 s) is part of the test.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path

import pytest

from state import SharedState
from tests.integration.test_cli import (
    child_env,
    flat,
    metric_count,
    run_bga,
    sqlite_url_of,
    system_state,
    ticks_of,
)

pytestmark = pytest.mark.slow

FLUSH_TIMEOUT_S = 90.0


def closed_port() -> int:
    """A local port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_langsmith_key() -> str:
    return f"lsv2_pt_{secrets.token_hex(16)}_{secrets.token_hex(5)}"


async def _write_events(url: str, key: str) -> int:
    async with SharedState.open(url, producer="tests") as shared:
        await shared.add_performance_metrics(
            [{"source_agent": "bridge", "name": "run_ms", "value": float(v)} for v in range(5)])
        await shared.add_error_pattern(
            "AuthError", f"401 from LangSmith with key {key}", "bridge")
        await shared.update_agent_heartbeat("bridge", {"status": "error", "api_key": key})
    return 7


def _db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())


def test_tick_with_tracing_to_an_unreachable_endpoint_completes_and_never_stores_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "state.db"
    url = sqlite_url_of(db)
    key = fake_langsmith_key()
    port = closed_port()
    monkeypatch.setenv("LANGSMITH_TRACING", "true")
    monkeypatch.setenv("LANGSMITH_API_KEY", key)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", f"http://127.0.0.1:{port}")
    written = asyncio.run(_write_events(url, key))
    env = child_env(keep_tracing=True)

    tick = run_bga("tick", "--db", url, cwd=tmp_path, env=env, timeout=FLUSH_TIMEOUT_S)

    assert f"folded {written} events" in flat(tick.stdout)
    assert f"127.0.0.1:{port}" in tick.stderr  # tracing was on, and only its upload failed
    assert key not in tick.stdout + tick.stderr
    assert ticks_of(url) == 1
    assert metric_count(url, "bridge/run_ms") == 5
    summary = system_state(url)
    assert int(summary["stats"]["events_folded"]) == written
    assert summary["inbox"]["pending"] == 0

    exported = run_bga("export", "--db", url, cwd=tmp_path, env=env, timeout=FLUSH_TIMEOUT_S)
    assert key not in exported.stdout
    assert "[REDACTED]" in exported.stdout  # the error sample kept its text, not the key
    assert "AuthError" in exported.stdout
    assert key.encode() not in _db_bytes(db)


def test_tick_with_tracing_off_by_default_needs_no_network(tmp_path: Path) -> None:
    url = sqlite_url_of(tmp_path / "state.db")
    port = closed_port()
    dead = f"http://127.0.0.1:{port}"
    # No LANGSMITH_* but the endpoint, and every proxy dead: any attempt to reach out would
    # have nowhere to go.
    env = child_env(LANGSMITH_ENDPOINT=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead,
                    http_proxy=dead, https_proxy=dead, NO_PROXY="", no_proxy="")

    tick = run_bga("tick", "--db", url, cwd=tmp_path, env=env, timeout=FLUSH_TIMEOUT_S)

    assert "tick done" in tick.stdout
    assert str(port) not in tick.stderr  # nothing tried to trace
    assert ticks_of(url) == 1
