"""Every lifecycle state change is recorded (who, when), even when several fold in one batch:
a regression between a close and a person's later resolve, several regressions in one batch,
rows in any order, batches cut anywhere (``state.lifecycle.settle``)."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from state import lifecycle, reducers
from state.compact import compact_insights
from state.config import RetentionConfig
from state.fold import InboxRow, fold_rows

T = 1_700_000_000.0
IID = "ins_a"
DASHBOARD, PROBE = 1, 2  # inbox streams: rows are read stream by stream, not in time order


def fired(t: float, by: str = "probe_agent") -> tuple[int, str, dict[str, Any]]:
    return PROBE, "insight", {"id": IID, "type": "queue_stuck", "a": by, "p": "critical",
                              "c": {"key": "orders"}, "t": t}


def did(action: str, t: float, by: str = "dashboard:ab12") -> tuple[int, str, dict[str, Any]]:
    return DASHBOARD, "triage", {"id": IID, "action": action, "by": by, "t": t}


def rows(events: list[tuple[int, str, dict[str, Any]]]) -> list[InboxRow]:
    seqs: dict[int, int] = {}
    out = []
    for stream, kind, payload in events:
        seqs[stream] = seqs.get(stream, 0) + 1
        out.append(InboxRow(stream, seqs[stream], kind, orjson.dumps(payload)))
    return out


def fold(state: dict[str, Any], batch: list[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """One fold of ``batch`` into the insights ``state``, as ``state.folder`` does it: merge the
    batch's delta, then compact (which settles)."""
    delta = fold_rows(rows(batch)).delta.get("insights") or {}
    return compact_insights(reducers.merge_insights(state, delta), T + 10_000,
                            RetentionConfig())


def changes(state: dict[str, Any]) -> list[tuple[str, float, str]]:
    return [(h["action"], h["at"] - T, h["by"]) for h in state[IID].get("history") or []]


def test_a_regression_folded_with_a_later_resolve_is_recorded() -> None:
    state = fold({}, [fired(T), did("acknowledge", T + 10)])
    # fired again, then resolved, both folded in one batch (the resolve's stream is read first)
    state = fold(state, [fired(T + 30), did("resolve", T + 50)])
    assert changes(state) == [("acknowledge", 10, "dashboard:ab12"),
                              ("regressed", 30, "probe_agent"), ("resolve", 50, "dashboard:ab12")]
    assert state[IID]["status"]["s"] == "resolved"  # the person's later decision still wins
    assert "fired" not in state[IID]  # a delta's firings never stay in the state
    assert lifecycle.view(state[IID], T + 60, {})["status"] == "resolved"
    assert fold(state, []) == state  # settled: idempotent


def test_every_change_of_one_batch_is_recorded_whatever_the_row_order() -> None:
    """ack, fire, ack, fire, resolve, fire in one batch: two regressions, and the last firing
    (after the resolve) is a third, which is the status now."""
    batch = [fired(T), did("acknowledge", T + 10), fired(T + 20, "coordinator"),
             did("acknowledge", T + 25), fired(T + 30), did("resolve", T + 40), fired(T + 45),
             fired(T + 47)]
    want = [("acknowledge", 10, "dashboard:ab12"), ("regressed", 20, "coordinator"),
            ("acknowledge", 25, "dashboard:ab12"), ("regressed", 30, "probe_agent"),
            ("resolve", 40, "dashboard:ab12"), ("regressed", 45, "probe_agent")]
    for order in itertools.islice(itertools.permutations(batch), 0, None, 997):
        state = fold({}, list(order))
        assert changes(state) == want
        assert state[IID]["status"]["s"] == "regressed" and state[IID]["status"]["at"] == T + 45


def test_firing_at_the_instant_of_a_close_does_not_reopen_it() -> None:
    state = fold({}, [fired(T), did("resolve", T + 5), fired(T + 5)])
    assert changes(state) == [("resolve", 5, "dashboard:ab12")]
    assert lifecycle.view(state[IID], T + 9, {})["status"] == "resolved"


EVENTS = [fired(T), did("acknowledge", T + 10), fired(T + 20), did("resolve", T + 30),
          fired(T + 40), did("reopen", T + 50), did("acknowledge", T + 60), fired(T + 70),
          did("resolve", T + 80)]


@settings(max_examples=60, deadline=None)
@given(st.permutations(EVENTS), st.lists(st.integers(0, len(EVENTS)), max_size=3))
def test_the_recorded_history_does_not_depend_on_batch_cuts_or_order(
        order: list[tuple[int, str, dict[str, Any]]], cuts: list[int]) -> None:
    """The same events, folded in any order and cut into batches anywhere, record the same
    changes, as long as each batch is in time order per stream (a stream writes in sequence)."""
    bounds = [0, *sorted(cuts), len(EVENTS)]
    state: dict[str, Any] = {}
    for lo, hi in itertools.pairwise(bounds):
        state = fold(state, sorted(EVENTS[lo:hi], key=lambda e: (e[0], e[2]["t"])))
    reordered = fold({}, order)
    want = [("acknowledge", 10, "dashboard:ab12"), ("regressed", 20, "probe_agent"),
            ("resolve", 30, "dashboard:ab12"), ("regressed", 40, "probe_agent"),
            ("reopen", 50, "dashboard:ab12"), ("acknowledge", 60, "dashboard:ab12"),
            ("regressed", 70, "probe_agent"), ("resolve", 80, "dashboard:ab12")]
    assert changes(state) == changes(reordered) == want
    assert state[IID]["status"]["s"] == "resolved"


def test_fired_keeps_the_earliest_firings_and_merges_in_any_order() -> None:
    many = [[T + i, "p"] for i in range(reducers.MAX_FIRED + 10)]
    one_by_one = None
    for f in reversed(many):
        one_by_one = reducers.merge_fired(one_by_one, [f])
    assert one_by_one == many[:reducers.MAX_FIRED]
    assert reducers.merge_fired(one_by_one, one_by_one) == one_by_one
    assert reducers.merge_fired(one_by_one, [[T + 999, "p"]]) is one_by_one  # past the cap
