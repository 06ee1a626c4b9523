"""Overview: health, last tick, agents by liveness, open insights, errors of the last hour."""

from __future__ import annotations

import streamlit as st

from dashboard import data, sections, ui

# a first look: every pattern (up to 500) is on the Error patterns page, filtered and sorted
TOP_ERRORS = 10


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    agents = data.agents(snap, metrics=False)
    sections.health(snap, agents)
    st.subheader("Open insights by priority")
    sections.open_insights(snap)
    st.subheader("Agents")
    sections.agents_table(snap, agents)
    st.subheader("Error patterns in the last hour")
    patterns = data.error_patterns(snap, 1)  # the most frequent first
    sections.error_table(patterns[:TOP_ERRORS], 1, compact=True)
    more = f"The {TOP_ERRORS} most frequent of {len(patterns):,}. " \
        if len(patterns) > TOP_ERRORS else ""
    st.caption(f"{more}Every pattern and column, filters and other windows: the Error "
               "patterns page.")


st.title("Overview")
ui.live(body)
