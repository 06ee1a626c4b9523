"""Overview: health, last tick, agents by liveness, open insights, errors of the last hour."""

from __future__ import annotations

import streamlit as st

from dashboard import data, sections, ui


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
    sections.error_table(data.error_patterns(snap, 1), 1, compact=True)
    st.caption("Every column, filters and other windows: the Error patterns page.")


st.title("Overview")
ui.live(body)
