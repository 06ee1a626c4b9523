"""``state.fold.fold_rows``: malformed rows are quarantined (with a reason), never raised, and
leave no trace in the delta; watermarks cover every row read, quarantined ones included; good
rows fold into what each channel promises.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from state import reducers
from state.fold import DeltaBuilder, InboxRow, fold_rows
from state.schema import TIERS

SETTINGS = settings(max_examples=150, deadline=None)

BASE_TS = 1_700_000_000
AGENTS = [f"agent-{i:02d}" for i in range(24)]
SERIES = ["alpha/latency", "alpha/cpu", "beta/latency"]
ERRORS = [("TimeoutError", "timeout after <num> s"), ("KeyError", "missing key <str>")]
KINDS = ("metric", "error", "insight", "ack", "triage", "triage_kv", "opt", "hb", "reg", "sys",
         "cfg")
ACTIONS = ("acknowledge", "resolve", "reopen", "mute", "unmute")

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=4))
json_value = st.one_of(json_scalar, st.dictionaries(st.sampled_from("xyz"), json_scalar,
                                                    max_size=2))
# Anything JSON can carry (within orjson's integer range; floats small enough not to overflow).
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=5),
              st.floats(-1e100, 1e100, allow_nan=False)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=6,
)
timestamp = st.builds(lambda m, s: BASE_TS + 60 * m + s, st.integers(0, 3000),
                      st.floats(0, 59.99) | st.integers(0, 59))
config_update = st.one_of(
    st.builds(lambda n: {"retention.minute_buckets": n}, st.integers(1, 500)),
    st.builds(lambda b: {"optimizer.enabled": b}, st.booleans()),
    st.builds(lambda n, b: {"rules.min_samples": n, "agents.system_monitor.enabled": b},
              st.integers(1, 50), st.booleans()),
)


@st.composite
def good_event(draw, kind: str | None = None) -> tuple[str, dict[str, Any]]:
    """A well-formed (kind, payload) as ``state.events`` / ``SharedState`` write them."""
    kind = kind or draw(st.sampled_from(KINDS))
    t = draw(timestamp)
    if kind == "metric":
        p = {"s": draw(st.sampled_from(SERIES)), "t": t,
             "v": draw(st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-100, 100))}
        if draw(st.booleans()):
            p["u"] = draw(st.sampled_from(["ms", "s"]))
    elif kind == "error":
        etype, norm = draw(st.sampled_from(ERRORS))
        p = {"id": f"{etype}|{norm}", "type": etype, "norm": norm,
             "msg": draw(st.text(max_size=6)), "a": draw(st.sampled_from(AGENTS)), "t": t}
    elif kind == "insight":
        p = {"id": draw(st.sampled_from(["ins_a", "ins_b"])), "type": "anomaly",
             "a": draw(st.sampled_from(AGENTS[:3])),
             "p": draw(st.sampled_from(["low", "medium", "high", "critical"])),
             "c": {"k": draw(json_value)}, "t": t}
    elif kind == "ack":
        p = {"id": draw(st.sampled_from(["ins_a", "ins_b"])), "t": t}
    elif kind == "triage":
        p = {"id": draw(st.sampled_from(["ins_a", "ins_b"])), "t": t,
             "action": draw(st.sampled_from(ACTIONS)), "by": draw(st.sampled_from(["u", "v"]))}
        if p["action"] == "mute":
            p["until"] = t + draw(st.integers(1, 10_000))
    elif kind == "triage_kv":
        p = {"k": draw(st.sampled_from(["mute_type:anomaly", "seen:dashboard"])), "t": t,
             "v": {"until": t + 60, "at": t, "by": "u"}}
    elif kind == "opt":
        p = {"record_id": draw(st.sampled_from(["opt-1", "opt-2"])), "success": True,
             "optimization_type": "cache", "target": "profile_import", "t": t}
    elif kind == "hb":
        p = {"a": draw(st.sampled_from(AGENTS[:3])), "status": "running",
             "d": {"n": draw(st.integers(0, 9))}, "t": t}
    elif kind == "reg":
        p = {"a": draw(st.sampled_from(AGENTS[:3])), "kind": "worker", "interval_s": 5.0,
             "schedule": None, "meta": {}, "t": t}
    elif kind == "sys":
        p = {"u": draw(st.dictionaries(st.sampled_from(["mode", "paused"]), json_value,
                                       min_size=1, max_size=2)), "t": t}
    else:
        p = {"u": draw(config_update), "t": t}
    return kind, p


def _row(stream: int, seq: int, kind: str, payload: Any) -> InboxRow:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return InboxRow(stream, seq, kind, raw)


@st.composite
def good_rows(draw, max_size: int = 30) -> list[InboxRow]:
    events = draw(st.lists(st.tuples(st.integers(1, 3), good_event()), max_size=max_size))
    seqs: dict[int, int] = {}
    rows = []
    for stream, (kind, payload) in events:
        seqs[stream] = seqs.get(stream, 0) + 1
        rows.append(_row(stream, seqs[stream], kind, payload))
    return rows


# --- malformed rows -------------------------------------------------------------------------------

REQUIRED = {
    "metric": ("t", "s", "v"),
    "error": ("t", "id", "type", "norm", "msg", "a"),
    "insight": ("t", "id", "type", "a", "p", "c"),
    "ack": ("t", "id"),
    "triage": ("t", "id", "action", "by"),
    "triage_kv": ("t", "k", "v"),
    "opt": ("t", "record_id", "target", "optimization_type"),
    "hb": ("t", "a", "status", "d"),
    "reg": ("t", "a", "kind", "interval_s", "schedule", "meta"),
    "sys": ("t", "u"),
    "cfg": ("t", "u"),
}
_NOT_STR = [5, 1.5, None, True, [], {}, ["a"]]
_NOT_NUMBER = ["1700000000", "1.5", None, True, False, [], {}, [1]]
WRONG = {
    "metric": {"s": _NOT_STR, "v": _NOT_NUMBER, "u": [5, True, [], {}, ["ms"]]},
    "error": {k: _NOT_STR for k in ("id", "type", "norm", "msg", "a")},
    "insight": {"id": _NOT_STR, "p": ["urgent", "", 1, None, ["low"]],
                "c": ["a string", 5, None, [], ["x"]]},  # the Insights page renders a dict
    "ack": {"id": _NOT_STR},
    "triage": {"id": _NOT_STR, "by": _NOT_STR, "action": ["ack", "", 1, None, ["resolve"]]},
    "triage_kv": {"k": _NOT_STR, "v": [[], "x", 5, None, True]},
    "opt": {"record_id": _NOT_STR, "target": _NOT_STR, "success": ["yes", [], None],
            # a tuning record (its details say so) the optimizer could not judge
            "details": [{"verify_after": 1}, {"param": "no_such_knob", "verify_after": 1},
                        {"param": "batch_size", "verify_after": "soon"}, "x", []]},
    "hb": {"a": _NOT_STR, "d": [[], ["a"], "x", 5, None]},  # agent lists read it as a dict
    "reg": {"a": _NOT_STR, "interval_s": ["5", True, [], {}, [5.0]]},
    "sys": {"u": [[], ["a"], "x", 5, None, True]},
    "cfg": {"u": [
        [], "x", 5, None,
        {"retention.minute_buckets": "120"},  # wrong type for the config schema
        {"retention.minute_buckets": 0},  # out of range
        {"no_such_section.key": 1},
        {"ticker.interval_s": 7.0, "retention.minute_buckets": -1},  # good key, then a bad one
        {"agents.system_monitor.kind.x.y": 1},  # nests under a scalar default
    ]},
}
BAD_TIMESTAMPS = [*_NOT_NUMBER, 0, -1, 1e12, 2**63]


@st.composite
def bad_payload(draw) -> tuple[str, str, bytes]:
    """(label, kind, raw payload) of a row the fold must quarantine."""
    label = draw(st.sampled_from(["json", "non_object", "unknown_kind", "missing", "wrong_type",
                                  "bad_timestamp"]))
    kind, p = draw(good_event())
    if label == "json":
        raw = draw(st.sampled_from([b"", b"{", b"{'t': 1}", b"\xff\xfe", b"nul", b"[1,",
                                    b'{"t": NaN}', b'{"t": 1e400}', b'{"t": 1,}'])
                   | st.binary(max_size=12).filter(_not_an_object))
        return label, kind, raw
    if label == "non_object":
        return label, kind, orjson.dumps(draw(st.lists(json_scalar, max_size=3) | json_scalar))
    if label == "unknown_kind":
        other = draw(st.sampled_from(["", "metrics", "METRIC", "err", "config", "x"]))
        return label, other, orjson.dumps(p)
    if label == "missing":
        field = draw(st.sampled_from(REQUIRED[kind]))
        return label, kind, orjson.dumps({k: v for k, v in p.items() if k != field})
    if label == "bad_timestamp":
        return label, kind, orjson.dumps({**p, "t": draw(st.sampled_from(BAD_TIMESTAMPS))})
    field = draw(st.sampled_from(sorted(WRONG[kind])))
    return label, kind, orjson.dumps({**p, field: draw(st.sampled_from(WRONG[kind][field]))})


def _not_an_object(raw: bytes) -> bool:
    try:
        return not isinstance(orjson.loads(raw), dict)
    except orjson.JSONDecodeError:
        return True


def _marks(rows: list[InboxRow]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in rows:
        out[r.stream] = max(out.get(r.stream, 0), r.seq)
    return out


@SETTINGS
@given(good_rows(), bad_payload(), st.integers(1, 3), st.integers(1, 50), st.data())
def test_a_bad_row_is_quarantined_and_changes_nothing(rows, bad, stream, seq, data):
    label, kind, raw = bad
    bad_row = InboxRow(stream, seq, kind, raw if data.draw(st.booleans()) else raw.decode(
        errors="replace"))
    at = data.draw(st.integers(0, len(rows)))
    mixed = [*rows[:at], bad_row, *rows[at:]]

    clean = fold_rows(rows)
    result = fold_rows(mixed)  # never raises

    assert not clean.quarantined
    assert [q.row for q in result.quarantined] == [bad_row], label
    reason = result.quarantined[0].reason
    assert isinstance(reason, str) and reason and len(reason) <= 500
    assert result.folded == clean.folded == len(rows)
    assert result.delta == clean.delta, label  # the bad row left no trace
    assert result.watermarks == _marks(mixed)  # ... but its sequence number is covered


CASES = [
    ("metric", b'{"s": "a/b", "v": "1.5", "t": 1700000000}'),
    ("metric", b'{"s": "a/b", "v": 1.5, "t": "1700000000"}'),
    ("metric", b'{"s": "a/b", "v": true, "t": 1700000000}'),
    ("metric", b'{"s": "a/b", "v": 1.5, "t": 1700000000, "u": 5}'),
    ("metric", b'{"s": 7, "v": 1.5, "t": 1700000000}'),
    ("metric", b'{"s": "a/b", "t": 1700000000}'),
    ("error", b'{"id": "p", "type": "E", "norm": "n", "msg": 1, "a": "x", "t": 1700000000}'),
    ("insight", b'{"id": "i", "type": "t", "a": "x", "p": "urgent", "c": {}, "t": 1700000000}'),
    ("ack", b'{"id": ["i"], "t": 1700000000}'),
    ("opt", b'{"t": 1700000000}'),
    ("hb", b'{"a": "x", "status": "ok", "t": 1700000000}'),
    ("reg", b'{"a": null, "kind": "k", "interval_s": 1, "schedule": null, "meta": {},'
            b' "t": 1700000000}'),
    ("reg", b'{"a": "x", "kind": "k", "interval_s": "5", "schedule": null, "meta": {},'
            b' "t": 1700000000}'),
    ("sys", b'{"u": ["mode"], "t": 1700000000}'),
    ("cfg", b'{"u": "retention", "t": 1700000000}'),
    ("cfg", b'{"u": {"ticker.interval_s": 7.0, "retention.minute_buckets": "x"},'
            b' "t": 1700000000}'),
    ("cfg", b'{"u": {"agents.system_monitor.kind.x.y": 1}, "t": 1700000000}'),
    ("metric", b'{"s": "a/b", "v": 1, "t": 1e300}'),
    ("bogus", b'{"t": 1700000000}'),
    ("metric", b"[1, 2]"),
    ("metric", b"null"),
    ("metric", b'{"s": "a/b", "v": 1, "t": 1700000000'),
    ("metric", b'{"s": "a/b", "v": NaN, "t": 1700000000}'),
    ("metric", b"\xff"),
]


@pytest.mark.parametrize(("kind", "raw"), CASES)
def test_known_malformed_rows_are_quarantined(kind, raw):
    good = _row(1, 1, "metric", {"s": "a/b", "v": 2.0, "t": BASE_TS})
    bad = InboxRow(2, 9, kind, raw)
    result = fold_rows([good, bad])
    assert [q.row for q in result.quarantined] == [bad]
    assert result.quarantined[0].reason.split(":")[0] in (
        "ValueError", "KeyError", "TypeError", "AttributeError", "JSONDecodeError",
        "ValidationError", "InvalidInput")
    assert result.delta == fold_rows([good]).delta
    assert result.watermarks == {1: 1, 2: 9}


@st.composite
def fuzzed_row_payload(draw) -> tuple[str, dict[str, Any]]:
    """A well-formed event with some fields replaced by arbitrary JSON or removed."""
    kind, p = draw(good_event())
    fields = st.sampled_from(sorted({*p, "t", "u", "v", "s", "id", "a", "p", "c", "d"}))
    for k, v in draw(st.dictionaries(fields, any_json, max_size=3)).items():
        p[k] = v
    for k in draw(st.lists(fields, max_size=2)):
        p.pop(k, None)
    return draw(st.sampled_from([kind, kind, "bogus"])), p


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 100), fuzzed_row_payload()),
                max_size=25))
def test_fold_never_raises_and_quarantined_rows_leave_no_trace(items):
    rows = [_row(stream, seq, kind, p) for stream, seq, (kind, p) in items]
    result = fold_rows(rows)  # never raises
    assert result.folded + len(result.quarantined) == len(rows)
    bad = {id(q.row) for q in result.quarantined}
    assert len(bad) == len(result.quarantined)
    kept = [r for r in rows if id(r) not in bad]
    again = fold_rows(kept)
    assert not again.quarantined
    assert again.delta == result.delta
    assert result.watermarks == _marks(rows)
    for q in result.quarantined:
        assert q.reason and len(q.reason) <= 500


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 1000), st.booleans()), max_size=30))
def test_watermarks_are_the_max_sequence_per_stream_including_quarantined(items):
    rows = [_row(stream, seq, "metric", {"s": "a/b", "v": 1, "t": BASE_TS} if ok else b"{")
            for stream, seq, ok in items]
    result = fold_rows(rows)
    assert result.watermarks == _marks(rows)
    assert result.folded == sum(ok for *_, ok in items)
    assert len(result.quarantined) == len(rows) - result.folded


# --- what good rows fold into ---------------------------------------------------------------------


def _events(rows: list[InboxRow], kind: str) -> list[tuple[list, dict]]:
    return [([(p := orjson.loads(r.payload))["t"], r.stream, r.seq], p)
            for r in rows if r.kind == kind]


@SETTINGS
@given(good_rows(max_size=60))
def test_good_rows_fold_into_what_each_channel_promises(rows):
    result = fold_rows(rows)
    delta = result.delta
    assert result.folded == len(rows) and not result.quarantined

    metrics = _events(rows, "metric")
    for series in {p["s"] for _, p in metrics}:
        values = [float(p["v"]) for _, p in metrics if p["s"] == series]
        times = [int(s[0]) for s, p in metrics if p["s"] == series]
        for tier, width in TIERS:
            buckets = delta["metrics"][series]["tiers"][tier]
            assert set(buckets) == {t - t % width for t in times}
            assert sum(agg[0] for agg in buckets.values()) == len(values)
            assert min(agg[2] for agg in buckets.values()) == min(values)
            assert max(agg[3] for agg in buckets.values()) == max(values)

    errors = _events(rows, "error")
    for pid in {p["id"] for _, p in errors}:
        mine = [(s, p) for s, p in errors if p["id"] == pid]
        pat = delta["error_patterns"][pid]
        assert pat["count"] == len(mine)
        assert pat["first_seen"] == min(s[0] for s, _ in mine)
        assert pat["last_seen"] == max(s[0] for s, _ in mine)
        newest = max(mine, key=lambda sp: sp[0])
        assert pat["sample"] == {"message": newest[1]["msg"], "agent": newest[1]["a"],
                                 "stamp": newest[0]}
        assert pat["sources"] == sorted({p["a"] for _, p in mine})[: reducers.MAX_SOURCES]
        for buckets in pat["tiers"].values():
            assert sum(buckets.values()) == len(mine)

    for aid in {p["a"] for _, p in _events(rows, "hb")}:
        beats = [(s, p) for s, p in _events(rows, "hb") if p["a"] == aid]
        assert delta["agents"][aid]["heartbeats"] == len(beats)
        assert delta["agents"][aid]["hb"]["stamp"] == max(s for s, _ in beats)

    for iid in {p["id"] for _, p in _events(rows, "insight")}:
        seen = [(s, p) for s, p in _events(rows, "insight") if p["id"] == iid]
        rec = delta["insights"][iid]
        assert rec["occurrences"] == len(seen)
        assert rec["body"]["stamp"] == max(s for s, _ in seen)
    statuses = {"acknowledge": "acknowledged", "resolve": "resolved", "reopen": "open"}
    changes = [(s, p | {"action": "acknowledge", "by": "api"}) for s, p in _events(rows, "ack")]
    changes += _events(rows, "triage")
    for iid in {p["id"] for _, p in changes}:
        mine = [(s, p) for s, p in changes if p["id"] == iid]
        rec = delta["insights"][iid]
        decided = [(s, p) for s, p in mine if p["action"] in statuses]
        if decided:  # the newest decision is the status, with who and when
            s, p = max(decided, key=lambda sp: sp[0])
            assert rec["status"] == {"s": statuses[p["action"]], "at": p["t"], "by": p["by"],
                                     "stamp": s}
        else:
            assert "status" not in rec
        mutes = [(s, p) for s, p in mine if p["action"] in ("mute", "unmute")]
        if mutes:
            s, p = max(mutes, key=lambda sp: sp[0])
            assert rec["mute"]["until"] == (p["until"] if p["action"] == "mute" else p["t"])
        # every change is in the history, newest MAX_HISTORY of them, oldest first
        want = sorted(s for s, _ in mine)[-reducers.MAX_HISTORY:]
        assert [e["stamp"] for e in rec["history"]] == want

    for kind, channel in (("sys", "system"), ("cfg", "config")):
        latest: dict[str, tuple[list, Any]] = {}
        for s, p in _events(rows, kind):
            for key, value in p["u"].items():
                if key not in latest or s > latest[key][0]:
                    latest[key] = (s, value)
        got = delta.get(channel, {})
        assert {k: (v["stamp"], v["value"]) for k, v in got.items()} == latest


@SETTINGS
@given(good_rows(), good_rows())
def test_a_builder_reused_across_calls_accumulates(first, second):
    builder = DeltaBuilder()
    fold_rows(first, builder)
    fold_rows(second, builder)
    assert builder.build() == fold_rows([*first, *second]).delta
