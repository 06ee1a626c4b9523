"""Every public SharedState method, fuzzed: it succeeds or raises ``InvalidInput`` naming the
field, and nothing it accepted breaks a later read or tick.

The values are the ones an operator's fuzzer found (issue 13) plus their neighbours: huge and
non-finite numbers, big integers, lone surrogates, non-string keys, dicts where numbers
belong, strings where dicts belong, timestamps from 1970.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.runner import tick
from state import InvalidInput, SharedState

FOUND = [1e308, -1e308, 10**400, -10**400, 1.0, 0, -1, float("nan"), float("inf"), "x",
         "\ud800", "a\udfffb", True, None, [], {}, {1: 2}, {"a": {"b": 1}}, 2**63, 2**64, "",
         " ", "\x00", "a/b", "x" * 300]
scalar = st.one_of(
    st.sampled_from(FOUND), st.none(), st.booleans(), st.integers(), st.floats(),
    st.text(max_size=8), st.text(st.characters(codec=None, categories=["Cs", "Ll"]),
                                 max_size=4))
key = st.one_of(st.text(max_size=6), st.integers(), st.sampled_from(["\ud800", "status"]))
value = st.recursive(scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(key, inner, max_size=3)), max_leaves=6)
name = st.one_of(st.sampled_from(["agent", "profile_import", "importer"]), scalar)
CONFIG_KEYS = ["retention", "retention.minute_buckets", "ticker", "ticker.interval_s",
               "optimizer", "optimizer.verify_s", "agents", "agents.profile_import",
               "agents.profile_import.batch_size", "rules", "liveness"]
config_update = st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS), key), value,
                                max_size=3) | value
metric = st.one_of(st.fixed_dictionaries(
    {"source_agent": name, "name": name, "value": scalar},
    optional={"unit": scalar, "timestamp": scalar}), value)
record = st.one_of(st.fixed_dictionaries(
    {"optimization_type": st.sampled_from(["batch_size", "tune_page_size", "cache"]) | scalar,
     "target": name},
    optional={"outcome": scalar | st.sampled_from(["applied", "kept"]), "before": value,
              "after": value, "details": value | st.fixed_dictionaries(
                  {"param": scalar | st.just("batch_size"), "verify_after": scalar})}), value)
events = st.lists(st.tuples(st.sampled_from(["metric", "hb", "opt", "x"]) | scalar,
                            value), max_size=3) | value

# method -> strategy of (args, kwargs)
CALLS: dict[str, Any] = {
    "add_performance_metric": st.tuples(metric).map(lambda a: (a, {})),
    "add_performance_metrics": st.lists(metric, max_size=3).map(lambda m: ((m,), {})) | value.map(
        lambda v: ((v,), {})),
    "add_error_pattern": st.tuples(name, scalar, name).map(lambda a: (a, {})),
    "add_optimization_record": st.tuples(record).map(lambda a: (a, {})),
    "add_insight": st.tuples(name, value, name, scalar | st.just("high"), scalar).map(
        lambda a: (a[:4], {"dedupe_key": a[4]})),
    "mark_insight_acted_upon": st.tuples(scalar).map(lambda a: (a, {})),
    "register_agent": st.tuples(name, scalar, scalar, scalar).map(lambda a: (a, {})),
    "update_agent_heartbeat": st.tuples(name, value).map(lambda a: (a, {})),
    "receive_heartbeat": st.tuples(name, value).map(lambda a: (a, {})),
    "update_system_state": st.tuples(value).map(lambda a: (a, {})),
    "update_config": st.tuples(config_update).map(lambda a: (a, {})),
    "write_events": st.tuples(events).map(lambda a: (a, {})),
    "request_optimization": st.just(((), {})),
    "read": st.tuples(scalar).map(lambda a: ((), {"attempts": a[0]})),
    "flush": st.tuples(scalar).map(lambda a: ((), {"wait": a[0]})),
    "get_active_agents": st.tuples(scalar).map(lambda a: (a, {})),
    "get_agents": st.just(((), {})),
    "get_processes": st.just(((), {})),
    "get_system_state": st.just(((), {})),
    "get_performance_summary": st.tuples(scalar).map(lambda a: (a, {})),
    "get_error_patterns": st.tuples(scalar, scalar, scalar).map(lambda a: (a, {})),
    "get_recent_optimizations": st.tuples(scalar, scalar, scalar).map(lambda a: (a, {})),
    "get_insights": st.tuples(scalar | st.just("high"), scalar, scalar, scalar).map(
        lambda a: (a, {})),
    "update_insights": st.tuples(st.lists(scalar, max_size=3) | value, scalar | st.sampled_from(
        ["acknowledge", "resolve", "mute"]), scalar).map(
        lambda a: ((a[0], a[1]), {"duration_s": a[2]})),
    "mute_insight_type": st.tuples(name, scalar).map(lambda a: (a, {})),
    "mark_insights_seen": st.tuples(scalar).map(lambda a: (a, {})),
    "get_insight_counts": st.tuples(scalar).map(lambda a: (a, {})),
    "export_state": st.just(((), {})),
    "restore_state": st.tuples(value | st.fixed_dictionaries(
        {"format": st.just("background-agents/state@1"),
         "channels": st.dictionaries(st.sampled_from(
             ["agents", "insights", "metrics", "config", "stats", "optimizations", "x"]),
             value, max_size=3)})).map(lambda a: (a, {"force": True})),
}
PUBLIC = sorted(n for n in dir(SharedState) if not n.startswith("_")
                and callable(getattr(SharedState, n)))


def test_every_public_method_is_fuzzed() -> None:
    not_fuzzed = {"open", "aclose"}  # opening and closing the handle itself
    assert set(PUBLIC) - not_fuzzed == set(CALLS)


async def _everything_reads(shared: SharedState) -> None:
    for method in ("get_agents", "get_processes", "get_system_state", "get_active_agents",
                   "get_performance_summary", "get_error_patterns", "get_recent_optimizations",
                   "get_insights", "export_state"):
        await getattr(shared, method)()
    json.dumps(await shared.export_state())


async def _call(shared: SharedState, method: str, args: tuple, kwargs: dict) -> Any:
    """A call as an application makes it: from a coroutine (the writes queue at the call,
    so they need the running loop)."""
    return await getattr(shared, method)(*args, **kwargs)


def _run(db_url: str, body: Callable[[asyncio.AbstractEventLoop, SharedState], None]) -> None:
    loop = asyncio.new_event_loop()
    try:
        opened = SharedState.open(db_url, producer="fuzz")
        shared = loop.run_until_complete(opened.__aenter__())
        try:
            body(loop, shared)
        finally:
            loop.run_until_complete(opened.__aexit__(None, None, None))
    finally:
        loop.close()


@pytest.mark.parametrize("method", sorted(CALLS))
def test_method_gives_invalid_input_or_success(db_url: str, method: str) -> None:
    outcomes: dict[str, int] = {"ok": 0, "invalid": 0}

    def body(loop: asyncio.AbstractEventLoop, shared: SharedState) -> None:
        @settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(CALLS[method])
        def one(call: tuple[tuple, dict]) -> None:
            args, kwargs = call
            try:
                loop.run_until_complete(_call(shared, method, args, kwargs))
            except InvalidInput as exc:
                assert exc.field and str(exc).startswith(exc.field), exc
                outcomes["invalid"] += 1
            else:
                outcomes["ok"] += 1
            loop.run_until_complete(_everything_reads(shared))  # whatever was accepted

        one()
        for _ in range(2):  # ... and the coordinator folds it: every tick succeeds
            loop.run_until_complete(tick(shared, wait=30))
        loop.run_until_complete(_everything_reads(shared))

    _run(db_url, body)
    assert sum(outcomes.values()) > 0


FOUND_CASES = [  # (method, args, kwargs, field named): each one the fuzzer found
    ("get_performance_summary", (1e308,), {}, "hours"),
    ("register_agent", ("a",), {"kind": "k", "interval_s": 10**400}, "interval_s"),
    ("add_performance_metric", ({"source_agent": "a", "name": "m", "value": -10**400},), {},
     "value"),
    ("get_insights", (), {"limit": "x"}, "limit"),
    ("add_error_pattern", ("E\ud800", "m", "a"), {}, "error_type"),
    ("add_error_pattern", ("E", "bad \udfff message", "a"), {}, "error_message"),
    ("update_agent_heartbeat", ("a", {1: "x"}), {}, "heartbeat_data"),
    ("update_system_state", ({"k": {2: 1}},), {}, "updates"),
    ("update_config", ({"retention": {"minute_buckets": {"a": 1}}},), {},
     "retention.minute_buckets"),
    ("add_performance_metric", ({"source_agent": "a", "name": "m", "value": 1.0,
                                 "timestamp": 1.0},), {}, "timestamp"),
]


@pytest.mark.parametrize(("method", "args", "kwargs", "field"), FOUND_CASES)
async def test_what_the_fuzzer_found_is_refused_naming_the_field(
    db_url: str, method: str, args: tuple, kwargs: dict, field: str
) -> None:
    async with SharedState.open(db_url, producer="fuzz") as shared:
        with pytest.raises(InvalidInput) as err:
            await getattr(shared, method)(*args, **kwargs)
        assert err.value.field == field, err.value
        assert (await shared.get_system_state())["inbox"]["pending"] == 0
