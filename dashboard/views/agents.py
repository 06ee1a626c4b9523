"""Agents: one row per agent with liveness, last error and activity; metric cards per agent."""

from __future__ import annotations

import streamlit as st

from dashboard import data, sections, ui


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    agents = data.agents(snap)
    sections.agents_table(snap, agents, full=True)
    if agents:
        st.caption("Liveness is judged from the heartbeat age: stale after "
                   "`liveness.stale_factor` missed intervals, dead after `liveness.dead_factor`.")
        head, lines_on, internal_on = st.columns([2.4, 1, 1.2], vertical_alignment="bottom")
        head.subheader("Key metrics, p95 over the last hour")
        lines = lines_on.toggle("Show p50 lines", key="agents_lines",
                                help="A line per card: p50 per minute over the last hour.")
        internal = internal_on.toggle("Show internal series", key="agents_internal",
                                      help="The system's own runs, mirrored by the bridge "
                                           "(`langsmith_bridge/local/...`).")
        sections.agent_metrics(snap, agents, internal=internal, lines=lines)
    st.subheader("Processes")
    st.caption("The coordinator that led the last tick and every `bga worker`, on any host "
               "that shares this database.")
    sections.processes_table(data.processes(snap))


st.title("Agents")
ui.live(body)
