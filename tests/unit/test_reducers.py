"""Merge laws of every channel reducer (``state.schema.REDUCERS``) on values the fold produces.

Channel values are built the way the system builds them: generated inbox rows (JSON payloads
in the formats ``state.fold._apply`` reads) are folded into deltas. Checked: commutativity
(exact), associativity (exact except float sums), identity of the empty value, purity,
idempotence of the last-writer-wins / max parts, symmetric ``lww`` tie-breaking, and the
end-to-end property that makes parallel nodes and reordering safe: folding rows in one go
equals folding any partition of them in chunks and merging the chunk deltas in any order.
"""

from __future__ import annotations

import copy
import math
from functools import reduce
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from state import reducers, sketch
from state.fold import DeltaBuilder, InboxRow, fold_rows
from state.schema import REDUCERS, apply_update

SETTINGS = settings(max_examples=120, deadline=None)

# --- generated inbox rows -------------------------------------------------------------------------

BASE_TS = 1_700_000_000
AGENTS = [f"agent-{i:02d}" for i in range(26)]  # more than MAX_SOURCES distinct sources
SERIES = ["alpha/latency", "alpha/cpu", "beta/latency"]
ERRORS = [("TimeoutError", "timeout after <num> s"), ("KeyError", "missing key <str>"),
          ("ValueError", "bad value <num>")]
INSIGHT_IDS = ["ins_a", "ins_b", "ins_c"]
RECORD_IDS = ["opt-1", "opt-2", "opt-3"]
BY = ["dashboard:ab12", "cli", "coordinator"]
SYSTEM_KEYS = ["mode", "load", "paused"]
# Config updates the fold accepts (each key is validated against the config schema).
config_update = st.one_of(
    st.builds(lambda n: {"retention.minute_buckets": n}, st.integers(1, 500)),
    st.builds(lambda x: {"ticker.interval_s": x}, st.sampled_from([0.5, 5.0, 60.0])),
    st.builds(lambda b: {"optimizer.enabled": b}, st.booleans()),
    st.builds(lambda n, b: {"rules.min_samples": n, "agents.system_monitor.enabled": b},
              st.integers(1, 50), st.booleans()),
)

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
json_value = st.one_of(json_scalar, st.dictionaries(st.sampled_from("xyz"), json_scalar,
                                                    max_size=2))
# Timestamps: few distinct minutes (so buckets and stamps collide) spread over ~3 days.
timestamp = st.one_of(
    st.builds(lambda m, s: BASE_TS + 60 * m + s, st.integers(0, 4), st.integers(0, 59)),
    st.builds(lambda m, s: BASE_TS + 60 * m + s, st.integers(0, 4400), st.floats(0, 59.99)),
)
metric_value = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, 1.0, 250.0, -3.5]),
    st.integers(-1000, 1000),
)


@st.composite
def event(draw) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["metric", "metric", "metric", "error", "error", "insight",
                                 "ack", "triage", "triage", "triage_kv", "opt", "hb", "reg",
                                 "sys", "cfg"]))
    t = draw(timestamp)
    if kind == "metric":
        p = {"s": draw(st.sampled_from(SERIES)), "v": draw(metric_value), "t": t}
        unit = draw(st.sampled_from([None, "ms", "s"]))
        if unit:
            p["u"] = unit
    elif kind == "error":
        etype, norm = draw(st.sampled_from(ERRORS))
        p = {"id": f"{etype}|{norm}", "type": etype, "norm": norm,
             "msg": draw(st.text(max_size=6)), "a": draw(st.sampled_from(AGENTS)), "t": t}
    elif kind == "insight":
        p = {"id": draw(st.sampled_from(INSIGHT_IDS)), "type": "anomaly",
             "a": draw(st.sampled_from(AGENTS[:3])),
             "p": draw(st.sampled_from(["low", "medium", "high", "critical"])),
             "c": {"k": draw(json_value)}, "t": t}
    elif kind == "ack":
        p = {"id": draw(st.sampled_from(INSIGHT_IDS)), "t": t}
    elif kind == "triage":
        p = {"id": draw(st.sampled_from(INSIGHT_IDS)), "t": t, "by": draw(st.sampled_from(BY)),
             "action": draw(st.sampled_from(["acknowledge", "resolve", "reopen", "mute",
                                             "unmute"]))}
        if p["action"] == "mute":
            p["until"] = t + draw(st.sampled_from([60, 3600]))
    elif kind == "triage_kv":
        p = {"k": draw(st.sampled_from(["mute_type:anomaly", "seen:dashboard"])), "t": t,
             "v": {"until": t + 60, "at": t, "by": draw(st.sampled_from(BY))}}
    elif kind == "opt":
        p = {"record_id": draw(st.sampled_from(RECORD_IDS)), "optimization_type": "cache",
             "target": "alpha", "success": draw(st.booleans()),
             "details": {"v": draw(json_value)}, "t": t}
    elif kind == "hb":
        p = {"a": draw(st.sampled_from(AGENTS[:4])), "status": draw(st.sampled_from(
            ["running", "idle"])), "d": {"n": draw(st.integers(0, 9))}, "t": t}
    elif kind == "reg":
        p = {"a": draw(st.sampled_from(AGENTS[:4])), "kind": "worker",
             "interval_s": draw(st.sampled_from([None, 5.0, 60.0])), "schedule": None,
             "meta": {"v": draw(json_scalar)}, "t": t}
    elif kind == "sys":
        p = {"u": draw(st.dictionaries(st.sampled_from(SYSTEM_KEYS), json_value, min_size=1,
                                       max_size=3)), "t": t}
    else:
        p = {"u": draw(config_update), "t": t}
    return kind, p


def to_rows(events: list[tuple[int, str, dict]]) -> list[InboxRow]:
    """Rows with per-stream increasing sequence numbers (each event enters the inbox once)."""
    seqs: dict[int, int] = {}
    rows = []
    for stream, kind, payload in events:
        seqs[stream] = seqs.get(stream, 0) + 1
        raw = orjson.dumps(payload)
        rows.append(InboxRow(stream, seqs[stream], kind, raw if stream % 2 else raw.decode()))
    return rows


@st.composite
def error_heavy(draw) -> list[tuple[str, dict[str, Any]]]:
    """One error pattern reported by more than MAX_SOURCES agents, among other events."""
    agents = draw(st.permutations(AGENTS))
    errors = [("error", {"id": "E|x", "type": "E", "norm": "x", "msg": draw(st.text(max_size=3)),
                         "a": agent, "t": draw(timestamp)}) for agent in agents]
    return draw(st.permutations(errors + draw(st.lists(event(), max_size=15))))


def _streams(events: list) -> st.SearchStrategy:
    return st.lists(st.integers(1, 3), min_size=len(events), max_size=len(events)).map(
        lambda streams: [(s, *ev) for s, ev in zip(streams, events, strict=True)])


# Mixed inboxes, and error-heavy ones where one pattern has more than MAX_SOURCES sources.
rows_strategy = st.one_of(
    st.lists(event(), max_size=40), st.lists(event(), max_size=40), error_heavy(),
).flatmap(_streams).map(to_rows)

stats_value = st.dictionaries(
    st.sampled_from(["events_folded", "quarantined", "folds", "ticks", "last_fold_at",
                     "last_tick_at"]),
    st.one_of(st.integers(0, 10**6), st.floats(0, 2e9)),
    max_size=6,
)
# Stamps of values written by graph nodes: [ts, NODE_ORIGIN = 0, seq]; few distinct ones, so
# equal stamps with different content (the tie-break) occur.
node_stamp = st.tuples(st.sampled_from([BASE_TS, BASE_TS + 60]), st.just(0),
                       st.integers(0, 2)).map(list)
liveness_value = st.dictionaries(
    st.sampled_from(AGENTS[:4]),
    st.fixed_dictionaries({"value": st.sampled_from(["ok", "stale", "dead"]),
                           "since": st.sampled_from([BASE_TS, BASE_TS + 1]),
                           "stamp": node_stamp}),
    max_size=3,
)
agent_data_value = st.dictionaries(
    st.sampled_from(AGENTS[:4]),
    st.fixed_dictionaries({"value": st.dictionaries(st.sampled_from(["cursor", "n"]),
                                                    json_scalar, max_size=2),
                           "stamp": node_stamp}),
    max_size=3,
)
tick_value = st.one_of(st.none(), st.fixed_dictionaries({
    "n": st.integers(1, 3), "started_at": st.sampled_from([BASE_TS, BASE_TS + 5]),
    "due": st.lists(st.sampled_from(AGENTS[:3]), max_size=2, unique=True).map(sorted),
    "stamp": node_stamp,
}))
# Channels no fold writes: values as the graph's nodes write them.
NODE_CHANNELS = {"stats": stats_value, "agent_data": agent_data_value, "tick": tick_value}


def channel_values(rows: list[InboxRow], node_values: dict, liveness: dict) -> dict[str, Any]:
    """A value for every channel, as a node's update would carry it."""
    result = fold_rows(rows)
    assert not result.quarantined, result.quarantined
    values = {ch: result.delta.get(ch) or {} for ch in REDUCERS}
    values["inbox"] = result.watermarks
    values.update(node_values)
    agents = values["agents"] = copy.deepcopy(values["agents"])
    for aid, live in liveness.items():
        agents.setdefault(aid, {})["liveness"] = live
    return values


@st.composite
def channel_parts(draw, n: int) -> list[dict[str, Any]]:
    """``n`` channel-value sets folded from disjoint slices of one generated inbox."""
    rows = draw(rows_strategy)
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), min_size=n - 1, max_size=n - 1)))
    bounds = [0, *cuts, len(rows)]
    return [channel_values(rows[bounds[i]:bounds[i + 1]],
                           draw(st.fixed_dictionaries(NODE_CHANNELS)), draw(liveness_value))
            for i in range(n)]


# --- comparison -----------------------------------------------------------------------------------


def _is_sketch(x: Any) -> bool:
    return sketch.is_agg(x)


def assert_close(a: Any, b: Any, path: str = "") -> None:
    """Exact equality, except sketch sums (index 1) and additive stats counters, which float
    addition makes order-dependent and are compared with ``math.isclose``."""
    if _is_sketch(a) and _is_sketch(b):
        assert len(a) == len(b), (path, a, b)
        for i in range(len(a)):
            if i == 1:
                assert math.isclose(a[1], b[1], rel_tol=1e-9, abs_tol=1e-6), (path, a, b)
            else:
                assert a[i] == b[i], (f"{path}[{i}]", a, b)
        return
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (path, a.keys(), b.keys())
        for k in a:
            assert_close(a[k], b[k], f"{path}/{k}")
        return
    if path.startswith("/stats/") and not path.endswith("_at"):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), (path, a, b)
        return
    assert a == b, (path, a, b)


def assert_channel_close(channel: str, a: Any, b: Any) -> None:
    assert_close(a, b, f"/{channel}")


# --- merge laws for every reducer -----------------------------------------------------------------


def test_every_channel_has_a_reducer_under_test():
    """Fails when a channel is added without a generator of its values here."""
    assert set(channel_values([], {ch: None for ch in NODE_CHANNELS}, {})) == set(REDUCERS)


@SETTINGS
@given(channel_parts(2))
def test_every_reducer_is_commutative(parts):
    a, b = parts
    for ch, merge in REDUCERS.items():
        assert merge(a[ch], b[ch]) == merge(b[ch], a[ch]), ch


@SETTINGS
@given(channel_parts(3))
def test_every_reducer_is_associative(parts):
    a, b, c = parts
    for ch, merge in REDUCERS.items():
        left = merge(merge(a[ch], b[ch]), c[ch])
        right = merge(a[ch], merge(b[ch], c[ch]))
        assert_channel_close(ch, left, right)


@SETTINGS
@given(channel_parts(1))
def test_empty_value_is_the_identity(parts):
    (a,) = parts
    for ch, merge in REDUCERS.items():
        assert merge(a[ch], None) == a[ch], ch
        assert merge(None, a[ch]) == a[ch], ch
        if ch != "tick":  # map channels: the empty map is the identity too
            assert merge(a[ch], {}) == a[ch], ch
            assert merge({}, a[ch]) == a[ch], ch


@SETTINGS
@given(channel_parts(2))
def test_reducers_do_not_mutate_their_inputs(parts):
    before = copy.deepcopy(parts)
    a, b = parts
    for ch, merge in REDUCERS.items():
        merge(a[ch], b[ch])
        merge(b[ch], a[ch])
        merge(merge(a[ch], b[ch]), a[ch])
    assert parts == before


LWW_CHANNELS = ("optimizations", "system", "config", "agent_data", "tick", "inbox", "triage")


@SETTINGS
@given(channel_parts(2))
def test_lww_and_max_reducers_are_idempotent(parts):
    a, b = parts
    for ch in LWW_CHANNELS:
        merge = REDUCERS[ch]
        assert merge(a[ch], a[ch]) == a[ch], ch
        ab = merge(a[ch], b[ch])
        assert merge(ab, b[ch]) == ab, ch  # re-applying a merged update changes nothing
        assert merge(ab, a[ch]) == ab, ch


@SETTINGS
@given(channel_parts(2))
def test_agent_registration_heartbeat_and_liveness_are_idempotent(parts):
    a, b = parts
    lww_parts = ("reg", "hb", "liveness")
    for x in (a["agents"], reducers.merge_agents(a["agents"], b["agents"])):
        twice = reducers.merge_agents(x, x)
        assert twice.keys() == x.keys()
        for aid, rec in x.items():
            for part in lww_parts:
                assert twice[aid].get(part) == rec.get(part), (aid, part)
            # The heartbeat count is additive (exactly-once is the watermarks' job).
            assert twice[aid]["heartbeats"] == 2 * rec.get("heartbeats", 0)


INSIGHT_LWW_PARTS = ("body", "status", "mute", "history", "first_seen", "last_seen")


@SETTINGS
@given(channel_parts(2))
def test_insight_lifecycle_parts_are_idempotent(parts):
    """Status, mute, body and history survive re-applying an update; occurrences add up."""
    a, b = parts
    for x in (a["insights"], reducers.merge_insights(a["insights"], b["insights"])):
        twice = reducers.merge_insights(x, x)
        assert twice.keys() == x.keys()
        for iid, rec in x.items():
            for part in INSIGHT_LWW_PARTS:
                assert twice[iid].get(part) == rec.get(part), (iid, part)
            assert twice[iid]["occurrences"] == 2 * rec.get("occurrences", 0)


@SETTINGS
@given(channel_parts(2))
def test_insight_history_is_the_newest_changes_of_both_sides(parts):
    a, b = parts
    merged = reducers.merge_insights(a["insights"], b["insights"])
    for iid, rec in merged.items():
        both = [e for x in (a, b) for e in (x["insights"].get(iid) or {}).get("history", [])]
        stamps = sorted({tuple(e["stamp"]) for e in both})[-reducers.MAX_HISTORY:]
        assert [tuple(e["stamp"]) for e in rec.get("history", [])] == stamps
        assert len(rec.get("history", [])) <= reducers.MAX_HISTORY
        statuses = [x["insights"][iid]["status"] for x in (a, b)
                    if "status" in x["insights"].get(iid, {})]
        if statuses:  # the newest decision wins, whichever side it came from
            assert rec["status"] == max(statuses, key=lambda s: s["stamp"])


@SETTINGS
@given(channel_parts(2))
def test_merged_values_are_what_each_field_promises(parts):
    """Spot checks of the merge semantics, beyond the algebraic laws."""
    a, b = parts
    ab = {ch: merge(a[ch], b[ch]) for ch, merge in REDUCERS.items()}
    for pid, p in ab["error_patterns"].items():
        srcs = set(a["error_patterns"].get(pid, {}).get("sources", [])) | set(
            b["error_patterns"].get(pid, {}).get("sources", []))
        assert p["sources"] == sorted(srcs)[: reducers.MAX_SOURCES]
        counts = [x["error_patterns"][pid]["count"] for x in (a, b) if pid in x["error_patterns"]]
        assert p["count"] == sum(counts)
        for tier in p["tiers"].values():
            assert sum(tier.values()) == p["count"]
    for stream in set(a["inbox"]) | set(b["inbox"]):
        assert ab["inbox"][stream] == max(a["inbox"].get(stream, 0), b["inbox"].get(stream, 0))
    for key in ab["stats"]:
        if key.endswith("_at"):
            assert ab["stats"][key] == max(x["stats"][key] for x in (a, b) if key in x["stats"])


# --- lww tie-breaking -----------------------------------------------------------------------------

stamp = st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2)).map(list)
record = st.fixed_dictionaries({"value": json_value, "stamp": stamp})
maybe_stamped = st.one_of(record, st.fixed_dictionaries({"value": json_value}))


@SETTINGS
@given(stamp, json_value, json_value)
def test_lww_tie_is_broken_symmetrically(s, x, y):
    a, b = {"value": x, "stamp": s}, {"value": y, "stamp": list(s)}
    winner = reducers.lww(a, b)
    assert winner == reducers.lww(b, a)
    assert winner in (a, b)
    # The same holds one level up, for every LWW map reducer.
    for merge in (reducers.merge_lww_map, reducers.merge_records):
        assert merge({"k": a}, {"k": b}) == merge({"k": b}, {"k": a}) == {"k": winner}


@SETTINGS
@given(maybe_stamped, maybe_stamped, maybe_stamped)
def test_lww_is_a_total_order_max(a, b, c):
    assert reducers.lww(a, b) == reducers.lww(b, a)
    assert reducers.lww(reducers.lww(a, b), c) == reducers.lww(a, reducers.lww(b, c))
    assert reducers.lww(a, a) == a
    assert reducers.lww(a, None) == reducers.lww(None, a) == a
    if "stamp" in a and "stamp" in b and a["stamp"] != b["stamp"]:
        newer = a if a["stamp"] > b["stamp"] else b
        assert reducers.lww(a, b) == newer
    if "stamp" in a and "stamp" not in b:
        assert reducers.lww(b, a) == a  # a stamped value beats an unstamped one


# --- the end-to-end property ----------------------------------------------------------------------


def _merge_deltas(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    return reduce(apply_update, deltas, {})


@settings(max_examples=150, deadline=None)
@given(rows_strategy, st.data())
def test_fold_all_equals_fold_of_any_partition_merged_in_any_order(rows, data):
    whole = fold_rows(rows)
    assert not whole.quarantined
    # Any partition: shuffle the rows, cut them into chunks, fold each chunk on its own ...
    order = data.draw(st.permutations(range(len(rows))))
    shuffled = [rows[i] for i in order]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=5)))
    bounds = [0, *cuts, len(rows)]
    chunks = [shuffled[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
    results = [fold_rows(chunk) for chunk in chunks]
    # ... and merge the chunk deltas with the reducers in any order.
    merge_order = data.draw(st.permutations(range(len(results))))
    merged = _merge_deltas([results[i].delta for i in merge_order])
    assert merged.keys() == whole.delta.keys()
    for ch in merged:
        assert_channel_close(ch, merged[ch], whole.delta[ch])
    marks = _merge_deltas([{"inbox": results[i].watermarks} for i in merge_order])
    assert marks.get("inbox", {}) == whole.watermarks
    assert sum(r.folded for r in results) == whole.folded == len(rows)


@SETTINGS
@given(rows_strategy, st.lists(st.integers(0, 40), max_size=4))
def test_one_builder_over_several_fold_calls_equals_one_fold(rows, cuts):
    """What ``state.folder.collect`` does: several reads folded into one builder."""
    bounds = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]
    builder = DeltaBuilder()
    for i in range(len(bounds) - 1):
        fold_rows(rows[bounds[i]:bounds[i + 1]], builder)
    assert builder.build() == fold_rows(rows).delta


@SETTINGS
@given(rows_strategy, st.data())
def test_applying_deltas_to_a_state_in_any_order_gives_the_same_state(rows, data):
    """A state built by successive updates does not depend on the order they arrive in."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), min_size=2, max_size=4)))
    bounds = [0, *cuts, len(rows)]
    deltas = [fold_rows(rows[bounds[i]:bounds[i + 1]]).delta for i in range(len(bounds) - 1)]
    order = data.draw(st.permutations(range(len(deltas))))
    first = _merge_deltas(deltas)
    second = _merge_deltas([deltas[i] for i in order])
    assert first.keys() == second.keys()
    for ch in first:
        assert_channel_close(ch, first[ch], second[ch])


# --- the insight lifecycle (state.lifecycle) ------------------------------------------------------


def _insight_rows(*events: tuple[str, dict]) -> dict[str, Any]:
    rows = to_rows([(1, kind, payload) for kind, payload in events])
    return fold_rows(rows).delta["insights"]


def _fired(t: float) -> tuple[str, dict]:
    return "insight", {"id": "ins_a", "type": "anomaly", "a": "coordinator", "p": "high",
                       "c": {}, "t": t}


def _did(action: str, t: float, by: str = "dashboard:ab12", **extra: Any) -> tuple[str, dict]:
    return "triage", {"id": "ins_a", "action": action, "by": by, "t": t, **extra}


def test_acknowledged_then_fired_again_is_regressed_and_settle_records_it():
    from state import lifecycle

    t = BASE_TS
    acked = _insight_rows(_fired(t), _did("acknowledge", t + 10))
    assert lifecycle.view(acked["ins_a"], t + 20, {})["status"] == "acknowledged"
    again = reducers.merge_insights(acked, _insight_rows(_fired(t + 30)))
    view = lifecycle.view(again["ins_a"], t + 40, {})
    assert (view["status"], view["since"], view["by"], view["active"]) == \
        ("regressed", t + 30, "coordinator", True)
    settled = lifecycle.settle(again)
    assert lifecycle.settle(settled) == settled  # idempotent
    rec = settled["ins_a"]
    assert rec["status"]["s"] == "regressed" and rec["status"]["at"] == t + 30
    assert [(e["action"], e["by"]) for e in rec["history"]] == [
        ("acknowledge", "dashboard:ab12"), ("regressed", "coordinator")]
    # a person's later decision wins over the recorded regression
    resolved = reducers.merge_insights(settled, _insight_rows(_did("resolve", t + 50)))
    assert lifecycle.view(resolved["ins_a"], t + 60, {})["status"] == "resolved"
    assert lifecycle.settle(resolved) == resolved


def test_resolved_without_new_firing_stays_resolved_and_reopen_opens():
    from state import lifecycle

    t = BASE_TS
    recs = _insight_rows(_fired(t), _did("resolve", t + 5))
    # nothing to record; only the delta's own firings are dropped
    assert lifecycle.settle(recs) == {"ins_a": {k: v for k, v in recs["ins_a"].items()
                                                if k != "fired"}}
    assert lifecycle.view(recs["ins_a"], t + 99, {})["active"] is False
    reopened = reducers.merge_insights(recs, _insight_rows(_did("reopen", t + 7)))
    assert lifecycle.view(reopened["ins_a"], t + 99, {})["status"] == "open"


def test_mutes_by_insight_and_by_type_expire_and_unmute_ends_them():
    from state import lifecycle

    t = BASE_TS
    recs = _insight_rows(_fired(t), _did("mute", t + 1, until=t + 100))
    view = lifecycle.view(recs["ins_a"], t + 50, {})
    assert (view["state"], view["status"], view["active"]) == ("muted", "open", False)
    assert lifecycle.view(recs["ins_a"], t + 100, {})["state"] == "open"  # expired
    unmuted = reducers.merge_insights(recs, _insight_rows(_did("unmute", t + 2)))
    assert lifecycle.view(unmuted["ins_a"], t + 50, {})["state"] == "open"
    plain = _insight_rows(_fired(t))
    assert lifecycle.view(plain["ins_a"], t + 50, {"anomaly": t + 60})["state"] == "muted"
    assert lifecycle.view(plain["ins_a"], t + 50, {"other": t + 60})["state"] == "open"


def test_an_acknowledgement_written_before_the_lifecycle_reads_as_acknowledged():
    from state import lifecycle

    t = BASE_TS
    old = {"ins_a": {"body": {"insight_type": "x", "source_agent": "a", "priority": "low",
                              "content": {}, "stamp": [t, 1, 1]}, "occurrences": 1,
                     "first_seen": t, "last_seen": t, "acted_upon_at": t + 5}}
    assert lifecycle.view(old["ins_a"], t + 9, {})["status"] == "acknowledged"
    merged = reducers.merge_insights(old, _insight_rows(_fired(t + 8)))
    assert lifecycle.view(merged["ins_a"], t + 9, {})["status"] == "regressed"
