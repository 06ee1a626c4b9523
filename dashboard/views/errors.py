"""Error patterns: normalised message, type, counts, first/last seen, sources, sample, trend."""

from __future__ import annotations

import streamlit as st

from dashboard import data, sections, ui

SORTS = {"count in window": ("frequency", True), "last seen": ("last_seen", True),
         "first seen": ("first_seen", False), "type": ("error_type", False)}


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    c1, c2, c3, c4, c5 = st.columns([1.6, 2, 2, 2, 1.5])
    label = c1.segmented_control("Window", list(data.WINDOWS), default="24 h",
                                 key="err_window", required=True)
    hours = data.WINDOWS[label or "24 h"]
    patterns = data.error_patterns(snap, hours)
    types = c2.multiselect("Type", sorted({p["error_type"] for p in patterns}), key="err_type")
    sources = c3.multiselect("Source agent",
                             sorted({s for p in patterns for s in p["source_agents"]}),
                             key="err_source")
    text = c4.text_input("Message contains", key="err_text").strip().lower()
    sort = c5.selectbox("Sort by", list(SORTS), key="err_sort")
    shown = [p for p in patterns
             if (not types or p["error_type"] in types)
             and (not sources or set(sources) & set(p["source_agents"]))
             and (not text or text in p["normalized_message"].lower()
                  or text in p["sample_message"].lower())]
    field, desc = SORTS[sort or "count in window"]
    shown.sort(key=lambda p: p[field], reverse=desc)
    m1, m2 = st.columns(2)
    m1.metric("Patterns shown", len(shown))
    m2.metric(f"Errors in the last {label}", sum(p["frequency"] for p in shown))
    if patterns and not shown:
        ui.empty("No pattern matches these filters.")
    else:
        sections.error_table(shown, hours)


st.title("Error patterns")
ui.live(body)
