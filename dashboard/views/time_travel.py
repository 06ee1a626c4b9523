"""Time travel: pick a retained checkpoint and see the state as it was then."""

from __future__ import annotations

import streamlit as st

from dashboard import data, sections, ui

NEWEST = 20


def label(c: dict) -> str:
    what = f"tick #{c['tick']}" if c["tick"] is not None else \
        "fold" if c["source"] == "update" else c["source"] or "checkpoint"
    return f"{ui.when(c['at'])} · {what} · step {c['step']}"


def body() -> None:
    everything = st.toggle("List every retained checkpoint (slower with a large state)",
                           key="tt_all")
    history = data.checkpoints(limit=None if everything else NEWEST)
    if not history:
        ui.empty("No checkpoint yet: each tick (`bga run`, `bga tick`) writes one, and the newest "
                 "`retention.checkpoints` are kept for time travel.")
    else:
        what = "retained checkpoint(s)" if everything or len(history) < NEWEST else \
            "newest checkpoints listed"
        st.caption(f"{len(history)} {what}, from {ui.when(history[-1]['at'])} to "
                   f"{ui.when(history[0]['at'])}.")
        by_id = {c["checkpoint_id"]: c for c in history}
        chosen = st.selectbox("State as of", list(by_id), format_func=lambda cid: label(by_id[cid]),
                              key="tt_checkpoint", index=None, placeholder="Pick a checkpoint")
        if chosen is None:
            st.caption("Pick a checkpoint to see agents, insights, error patterns and metrics as "
                       "they were then.")
        else:
            try:
                snap = data.load(chosen)
            except LookupError as exc:
                st.warning(f"{exc}: pick another one.")
            else:
                ui.freshness(snap)
                sections.snapshot_view(snap)
                st.download_button(
                    "Download this checkpoint as JSON",
                    lambda: data.export_json(snap),
                    file_name=f"bga-state-{chosen}.json",
                    mime="application/json", key="tt_download", icon=":material/download:")


st.title("Time travel")
ui.guarded(body)()
