"""A secret of any shape, embedded anywhere in any input, through every API location, never
appears in the database (raw bytes: inbox rows before the fold, checkpoints, quarantine
tables), the export, ``bga status`` / ``--json``, the logs or the dashboard's page source.

Every (shape, location) pair is swept once, then hypothesis embeds secrets in random text at
random locations. Runs on SQLite and PostgreSQL. Each secret has a random *core* (its
credential part); the core must be absent everywhere. A write may also be refused
(``InvalidInput``): then its message must not repeat the core either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import string
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from graph.cli import app
from nodes.langsmith_bridge.sync import sync
from state import OptimizationRecord, PerformanceMetric, SharedState
from state.models import InvalidInput
from tests.conftest import postgres_schema

ALNUM = string.ascii_letters + string.digits


def _body(r: random.Random, n: int = 24, alphabet: str = ALNUM) -> str:
    return r.choice(string.ascii_lowercase) + r.choice(string.digits) + \
        "".join(r.choice(alphabet) for _ in range(n - 2))


# shape name -> (secret, core) from a seeded random source
SHAPES: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "langsmith": lambda r: (f"lsv2_pt_{(b := _body(r, 32))}_0a1b2c3d4e", b),
    "langsmith_legacy": lambda r: (f"ls__{(b := _body(r))}", b),
    "openai": lambda r: (f"sk-proj-{(b := _body(r, 40))}", b),
    "anthropic": lambda r: (f"sk-ant-api03-{(b := _body(r, 40))}", b),
    "aws": lambda r: ((s := "AKIA" + "".join(r.choice(string.ascii_uppercase + string.digits)
                                              for _ in range(16))), s[4:]),
    "github": lambda r: (f"ghp_{(b := _body(r, 36))}", b),
    "github_pat": lambda r: (f"github_pat_11A{(b := _body(r, 40))}", b),
    "jwt": lambda r: (f"eyJhbGciOiJIUzI1NiJ9.eyJ{(b := _body(r, 30))}.{_body(r, 20)}", b),
    "slack_bot": lambda r: (f"xoxb-1234567890-{(b := _body(r))}", b),
    "slack_user": lambda r: (f"xoxp-1234567890-{(b := _body(r))}", b),
    "google": lambda r: (f"AIza{(b := _body(r, 35))}", b),
    "stripe": lambda r: (f"sk_live_{(b := _body(r))}", b),
    "stripe_restricted": lambda r: (f"rk_live_{(b := _body(r))}", b),
    "pem": lambda r: (f"-----BEGIN RSA PRIVATE KEY-----\nMII{(b := _body(r, 40))}\n"
                      "-----END RSA PRIVATE KEY-----", b),
    "x_api_key": lambda r: (f"x-api-key: {(b := _body(r))}", b),
    "db_pass": lambda r: (f"DB_PASS={(b := _body(r, 16))}", b),
    "url": lambda r: (f"postgresql://app:{(b := _body(r, 16))}@db.internal:5432/app", b),
    "bearer": lambda r: (f"Authorization: Bearer {(b := _body(r, 30))}", b),
    "password": lambda r: (f"password={(b := _body(r, 16))}", b),
    "after_word": lambda r: (f"my api key {(b := _body(r, 28))}", b),
}

Write = Callable[[SharedState, str], Awaitable[Any]]


def _agent_data(shared: SharedState, text: str) -> Awaitable[None]:
    from state import events

    return shared.write_events([events.agent_data("probe", {"cursor": text})])


# location -> how to put ``text`` there through the API
LOCATIONS: dict[str, Write] = {
    "metric.name": lambda s, t: s.add_performance_metric(
        PerformanceMetric(source_agent="probe", name=t, value=1.0)),
    "metric.unit": lambda s, t: s.add_performance_metric(
        PerformanceMetric(source_agent="probe", name="m", value=1.0, unit=t)),
    "metric.source_agent": lambda s, t: s.add_performance_metric(
        {"source_agent": t, "name": "m", "value": 1.0}),
    "error.type": lambda s, t: s.add_error_pattern(t, "boom", "probe"),
    "error.message": lambda s, t: s.add_error_pattern("E", t, "probe"),
    "error.source_agent": lambda s, t: s.add_error_pattern("E", "boom", t),
    "insight.type": lambda s, t: s.add_insight(t, {"summary": "x"}, "probe"),
    "insight.content": lambda s, t: s.add_insight("i", {"summary": t}, "probe"),
    "insight.content_key": lambda s, t: s.add_insight("i", {t: 1}, "probe"),
    "insight.source_agent": lambda s, t: s.add_insight("i", {"summary": "x"}, t),
    "insight.dedupe_key": lambda s, t: s.add_insight("i", {"summary": "x"}, "probe",
                                                     dedupe_key=t),
    "insight.ack_id": lambda s, t: s.mark_insight_acted_upon(t),
    "agent.id": lambda s, t: s.register_agent(t, kind="probe", interval_s=60),
    "agent.kind": lambda s, t: s.register_agent("probe", kind=t, interval_s=60),
    "agent.meta": lambda s, t: s.register_agent("probe", kind="probe", note=t),
    "heartbeat.data": lambda s, t: s.update_agent_heartbeat("probe", {"detail": t}),
    "heartbeat.status": lambda s, t: s.update_agent_heartbeat("probe", {"status": t}),
    "heartbeat.agent_id": lambda s, t: s.update_agent_heartbeat(t, {"status": "ok"}),
    "optimization.target": lambda s, t: s.add_optimization_record(
        OptimizationRecord(optimization_type="tune", target=t)),
    "optimization.type": lambda s, t: s.add_optimization_record(
        {"optimization_type": t, "target": "probe", "details": {"why": t}}),
    "config.option_key": lambda s, t: s.update_config(
        {"agents": {"langsmith_bridge": {"options": {t: 1}}}}),
    "config.option_value": lambda s, t: s.update_config(
        {"agents": {"langsmith_bridge": {"options": {"project": t}}}}),
    "config.agent_id": lambda s, t: s.update_config({"agents": {t: {"kind": "system_monitor"}}}),
    "system.key": lambda s, t: s.update_system_state({t: 1}),
    "system.value": lambda s, t: s.update_system_state({"note": t}),
    "agent_data": _agent_data,
}


def embed(secret: str, prefix: str, suffix: str) -> str:
    return f"{prefix} {secret} {suffix}".strip()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def leak_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "postgres":
        with postgres_schema() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'state.db'}"


def stored_bytes(url: str) -> bytes:
    """Everything the database holds, as bytes (raw files for SQLite, every row of every
    table of the schema for PostgreSQL; bytea values as their bytes)."""
    if url.startswith("sqlite:///"):
        base = Path(url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in base.parent.iterdir()
                        if p.name.startswith(base.name) or p.suffix == ".db")
    import psycopg

    out: list[bytes] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        out.append(bytes(value))
                    elif value is not None:
                        out.append(json.dumps(value, default=str).encode()
                                   if not isinstance(value, str) else value.encode())
    return b"\n".join(out)


def assert_absent(cores: list[str], where: str, blob: bytes | str) -> None:
    data = blob if isinstance(blob, bytes) else blob.encode()
    leaked = [c for c in cores if c.encode() in data]
    assert not leaked, f"{len(leaked)} secret(s) reached {where}: {leaked[:3]}"


async def put(url: str, location: str, text: str, core: str) -> None:
    """One write; a refusal is fine if its message hides the secret."""
    async with SharedState.open(url, producer="leaks") as shared:
        try:
            await LOCATIONS[location](shared, text)
        except (InvalidInput, ValidationError) as exc:  # the model itself may refuse
            assert core not in str(exc), f"{location}: the error repeats the secret"


async def flush(url: str) -> dict[str, Any]:
    async with SharedState.open(url, producer="leaks") as shared:
        await shared.flush(wait=30)
        return await shared.export_state()


async def producer_and_bridge(url: str, tmp_path: Path, cores: list[str]) -> None:
    """The producer name, and a bridge export whose run names and session carry secrets."""
    rng = random.Random(15)
    lines = []
    for shape in SHAPES.values():
        secret, core = shape(rng)
        cores.append(core)
        try:
            async with SharedState.open(url, producer=f"svc {secret}") as shared:
                await shared.add_performance_metric(
                    PerformanceMetric(source_agent="probe", name="m", value=2.0))
        except InvalidInput as exc:
            assert core not in str(exc)
        rid = str(uuid.uuid4())
        lines.append(json.dumps({
            "id": rid, "name": f"step {secret}", "run_type": "chain", "trace_id": rid,
            "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:00:01Z",
            "status": "error", "error": f"failed with {secret}", "parent_run_id": None,
            "session_name": f"proj {secret}", "inputs": {}, "outputs": {}}))
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    async with SharedState.open(url, producer="leaks") as shared:
        await sync(shared, path=path)


def dashboard_source(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every element of every page as Streamlit would send it to the browser."""
    from streamlit.testing.v1 import AppTest

    from dashboard import data

    app_path = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    monkeypatch.setenv("BGA_DATABASE_URL", url)
    out: list[str] = []

    def walk(node: Any) -> None:
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in (getattr(node, "children", None) or {}).values():
            walk(child)

    for page in ("overview", "agents", "performance", "errors", "insights", "optimizations",
                 "configuration", "time_travel", "export"):
        data.refresh()
        at = AppTest.from_file(str(app_path), default_timeout=60)
        at.run()
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        walk(at._tree)
    return "\n".join(out)


def check_everywhere(url: str, cores: list[str], export: dict[str, Any],
                     caplog: pytest.LogCaptureFixture) -> None:
    assert_absent(cores, "the database", stored_bytes(url))
    assert_absent(cores, "the export", json.dumps(export))
    runner = CliRunner()
    for args in (["status", "--db", url], ["status", "--db", url, "--json"],
                 ["export", "--db", url]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert_absent(cores, f"bga {' '.join(args[:1] + args[3:])}", result.output)
    assert_absent(cores, "the logs", caplog.text)


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(shape=st.sampled_from(sorted(SHAPES)), location=st.sampled_from(sorted(LOCATIONS)),
       seed=st.integers(0, 2**32 - 1),
       prefix=st.text(ALNUM + " .,;:!?()-_'\"=", max_size=30),
       suffix=st.text(ALNUM + " .,;:!?()-_'\"=", max_size=30))
def _random_embedding(url: str, cores: list[str], shape: str, location: str, seed: int,
                      prefix: str, suffix: str) -> None:
    secret, core = SHAPES[shape](random.Random(seed))
    cores.append(core)
    asyncio.run(put(url, location, embed(secret, prefix, suffix), core))
    assert_absent([core], f"the database (unfolded, {shape} in {location})", stored_bytes(url))


def test_no_secret_reaches_the_database_export_status_logs_or_dashboard(
        leak_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    cores: list[str] = []
    rng = random.Random(2026)
    asyncio.run(producer_and_bridge(leak_url, tmp_path, cores))  # before config is cluttered
    assert_absent(cores, "the database (bridge)", stored_bytes(leak_url))
    # every (shape, location) pair once; the inbox rows are checked before any fold
    for location in LOCATIONS:
        for make in SHAPES.values():
            secret, core = make(rng)
            cores.append(core)
            asyncio.run(put(leak_url, location, embed(secret, "see", "now"), core))
    assert_absent(cores, "the database (inbox, before the fold)", stored_bytes(leak_url))
    # random text around secrets at random locations
    _random_embedding(leak_url, cores)
    export = asyncio.run(flush(leak_url))
    check_everywhere(leak_url, cores, export, caplog)
    assert_absent(cores, "the dashboard's page source", dashboard_source(leak_url, monkeypatch))
