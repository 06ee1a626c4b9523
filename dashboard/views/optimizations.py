"""Optimizations: history with before / after and outcome; request a cycle."""

from __future__ import annotations

import json

import streamlit as st

from dashboard import auth, data, ui

WINDOWS = {"24 h": 24, "7 d": 24 * 7, "30 d": 24 * 30}
VERDICT = {"kept": "kept", "rolled_back": "rolled back", "applied": "verifying",
           "proposed": "proposed", "failed": "failed", "skipped": "skipped"}


def request() -> None:
    try:
        data.request_optimization()
    except auth.Forbidden as exc:
        st.session_state["opt_requested"] = str(exc)
    else:
        st.session_state["opt_requested"] = True


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    values = data.system_values(snap)
    left, right = st.columns([3, 2])
    with left:
        if values.get("optimization_requested"):
            st.info("An optimization cycle is requested: the coordinator runs it on its next "
                    "tick.", icon=":material/schedule:")
        last = values.get("last_optimization_cycle")
        if last:
            st.caption(f"Last cycle {ui.when(last.get('at'))} "
                       f"({'manual' if last.get('manual') else 'scheduled'}): "
                       f"{last.get('changes', 0)} changes")
    with right:
        if auth.allowed("operator"):  # the write itself is gated too
            st.button("Request optimization cycle", key="request_opt", on_click=request,
                      icon=":material/play_arrow:", disabled=snap.live is False)
        requested = st.session_state.pop("opt_requested", False)
        if requested is True:
            st.toast("Optimization cycle requested")
        elif requested:
            st.error(requested)
    label = st.segmented_control("Window", list(WINDOWS), default="7 d", key="opt_window",
                                 required=True)
    records = data.optimizations(snap, WINDOWS[label or "7 d"])
    if not records:
        ui.empty("No optimization in this window. The optimizer runs every "
                 "`optimizer.interval_s`, or now with the button above.")
        return
    counts = {k: sum(1 for r in records if r["outcome"] == k) for k in VERDICT}
    cols = st.columns(4)
    cols[0].metric("Changes", len(records))
    cols[1].metric("Kept", counts["kept"])
    cols[2].metric("Rolled back", counts["rolled_back"])
    cols[3].metric("Verifying", counts["applied"])
    rows = [{"time": ui.when(r["timestamp"]), "type": r["optimization_type"],
             "target": r["target"], "before": json.dumps(r["before"], sort_keys=True),
             "after": json.dumps(r["after"], sort_keys=True),
             "outcome": r["outcome"], "result": VERDICT.get(r["outcome"], r["outcome"]),
             "success": r["success"]} for r in records]
    ui.table(rows, status=("outcome",))


st.title("Optimizations")
ui.live(body)
