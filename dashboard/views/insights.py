"""Insights: filter by priority, type and state; evidence; mark one acted upon."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import data, ui

STATES = {"All": None, "Open": False, "Acted upon": True}
MAX_SHOWN = 100


def ack(insight_id: str) -> None:
    """Button callback: runs before the re-render, so the change shows at once."""
    if not data.mark_acted_upon(insight_id):
        st.session_state["ack_error"] = f"insight {insight_id} no longer exists"


def card(i: dict[str, Any]) -> None:
    with st.container(border=True, key=f"insight_{i['insight_id']}"):
        head, action = st.columns([4, 1])
        with head:
            ui.badge(i["priority"])
            st.markdown(f"**{ui.safe_text(i['insight_type'])}** · from "
                        f"{ui.safe_text(i['source_agent'])} · "
                        f"{i['occurrences']}× · last seen {ui.when(i['last_seen'])}")
            if i["content"].get("summary"):
                st.markdown(ui.safe_text(i["content"]["summary"]))
        with action:
            if i["acted_upon"]:
                st.success("Acted upon", icon=":material/check:")
                st.caption(ui.when(i["acted_upon_at"]))
            else:
                st.button("Mark acted upon", key=f"ack_{i['insight_id']}", on_click=ack,
                          args=(i["insight_id"],), type="primary")
        with st.expander("Evidence"):
            st.json(i["content"])
            st.caption(f"id `{i['insight_id']}` · first seen {ui.when(i['first_seen'])}")


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    if msg := st.session_state.pop("ack_error", None):
        st.error(msg)
    everything = data.insights(snap)
    if not everything:
        ui.empty("No insights yet: the coordinator writes them as it reviews metrics and "
                 "errors on each tick (`bga run`); services add their own with `add_insight`.")
        return
    c1, c2, c3 = st.columns([2, 2, 2])
    priorities = c1.multiselect("Priority", list(reversed(data.PRIORITIES)), key="ins_priority")
    types = c2.multiselect("Type", sorted({i["insight_type"] for i in everything}),
                           key="ins_type")
    state = c3.segmented_control("State", list(STATES), default="All", key="ins_state",
                                 required=True)
    acted = STATES[state or "All"]
    shown = [i for i in everything
             if (not priorities or i["priority"] in priorities)
             and (not types or i["insight_type"] in types)
             and (acted is None or i["acted_upon"] == acted)]
    n_open = sum(1 for i in shown if not i["acted_upon"])
    m1, m2 = st.columns(2)
    m1.metric("Insights shown", len(shown))
    m2.metric("Open", n_open)
    if not shown:
        ui.empty("No insight matches these filters.")
    for i in shown[:MAX_SHOWN]:
        card(i)
    if len(shown) > MAX_SHOWN:
        st.caption(f"{len(shown) - MAX_SHOWN} more not shown: narrow the filters.")


st.title("Insights")
ui.live(body)
