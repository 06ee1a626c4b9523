"""Insights, triaged like an issue tracker's: open -> acknowledged -> resolved, regressed when
one fires again after that, muted by insight or by type for a while; bulk actions, paging,
evidence and history on demand, and what is new since you last looked."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import auth, data, ui

# Shown state -> the lifecycle states it selects (None: all).
STATES: dict[str, list[str] | None] = {
    "Needs attention": ["open", "regressed"], "Regressed": ["regressed"],
    "Acknowledged": ["acknowledged"], "Resolved": ["resolved"], "Muted": ["muted"], "All": None,
}
MUTE_FOR: dict[str, float] = {"1 hour": 3600.0, "8 hours": 8 * 3600.0, "1 day": 86_400.0,
                              "7 days": 7 * 86_400.0}
STATE_COLOURS = {"open": "red", "regressed": "violet", "acknowledged": "blue",
                 "resolved": "green", "muted": "gray"}
DONE = {"acknowledge": "Acknowledged", "resolve": "Resolved", "reopen": "Reopened",
        "mute": "Muted", "unmute": "Unmuted"}
PAGE_SIZE = 20
NOTICE = "ins_notice"


def _selected(ids: list[str]) -> list[str]:
    return [i for i in ids if st.session_state.get(f"sel_{i}")]


def act(ids: list[str], action: str, duration_s: float | None = None) -> None:
    """Button callback (runs before the re-render, so the change shows at once)."""
    if not ids:
        st.session_state[NOTICE] = ("warning", "Select insights first.")
        return
    try:
        done = data.update_insights(ids, action, duration_s)
    except auth.Forbidden as exc:
        st.session_state[NOTICE] = ("warning", str(exc))
        return
    for iid in ids:
        st.session_state.pop(f"sel_{iid}", None)
    gone = len(ids) - len(done)
    text = f"{DONE[action]} {len(done)} insight{'s' * (len(done) != 1)}"
    st.session_state[NOTICE] = ("success" if not gone else "warning",
                                text + (f"; {gone} no longer exist" if gone else ""))


def select_page(ids: list[str], value: bool) -> None:
    for iid in ids:
        st.session_state[f"sel_{iid}"] = value


def mute_type(insight_type: str | None, duration_s: float | None) -> None:
    if insight_type:
        try:
            data.mute_insight_type(insight_type, duration_s)
        except auth.Forbidden as exc:
            st.session_state[NOTICE] = ("warning", str(exc))
            return
        st.session_state[NOTICE] = ("success", f"{'Muted' if duration_s else 'Unmuted'} "
                                               f"every {insight_type} insight")


def mark_seen() -> None:
    data.mark_insights_seen()


def _actions(i: dict[str, Any]) -> None:
    iid, status, muted = i["insight_id"], i["status"], i["state"] == "muted"
    if status in ("open", "regressed"):
        st.button("Acknowledge", key=f"ack_{iid}", on_click=act, args=([iid], "acknowledge"),
                  type="primary", width="stretch")
    if status != "resolved":
        st.button("Resolve", key=f"resolve_{iid}", on_click=act, args=([iid], "resolve"),
                  width="stretch")
    if status in ("acknowledged", "resolved"):
        st.button("Reopen", key=f"reopen_{iid}", on_click=act, args=([iid], "reopen"),
                  width="stretch")
    if muted:
        st.button("Unmute", key=f"unmute_{iid}", on_click=act, args=([iid], "unmute"),
                  width="stretch")
    else:
        with st.popover("Mute", width="stretch"):
            for label, seconds in MUTE_FOR.items():
                st.button(f"for {label}", key=f"mute_{int(seconds)}_{iid}", on_click=act,
                          args=([iid], "mute", seconds))


def _state_line(i: dict[str, Any]) -> str:
    state = i["state"]
    if state == "muted":
        return f"muted until {ui.when(i['muted_until'])} ({i['status']})"
    if state == "regressed":
        return f"regressed {ui.when(i['since'])}: fired again after it was closed"
    if state == "open":
        return f"open since {ui.when(i['since'])}"
    return f"{state} {ui.when(i['since'])}"


def card(i: dict[str, Any], now: float, *, can_act: bool = True) -> None:
    iid = i["insight_id"]
    with st.container(border=True, key=f"insight_{iid}"):
        pick, head, action = st.columns([0.25, 5, 1.2], vertical_alignment="top")
        if can_act:
            pick.checkbox("select", key=f"sel_{iid}", label_visibility="collapsed")
        with head:
            with st.container(horizontal=True, key=f"badges_{iid}"):
                ui.badge(i["priority"])
                st.badge(i["state"], color=STATE_COLOURS.get(i["state"], "gray"))  # type: ignore[arg-type]
            summary = i["content"].get("summary")
            st.text(str(summary) if summary else i["insight_type"])
            st.text(f"{i['insight_type']} · from {i['source_agent']} · {i['occurrences']}× · "
                    f"last seen {ui.age(now - i['last_seen'])} · {_state_line(i)}"
                    + (f" by {i['by']}" if i["by"] and i["state"] != "open" else ""))
            if st.toggle("Evidence and history", key=f"ev_{iid}"):
                st.json(i["content"])
                if i["history"]:
                    ui.table([{"when": ui.when(h["at"]), "change": h["action"],
                               "by": h["by"], "until": ui.when(h.get("until"))
                               if h.get("until") else ""} for h in reversed(i["history"])])
                st.text(f"id {iid} · first seen {ui.when(i['first_seen'])}")
        if can_act:
            with action:
                _actions(i)


def _bulk_bar(page_ids: list[str]) -> None:
    chosen = _selected(page_ids)
    n = len(chosen)
    with st.container(horizontal=True, vertical_alignment="center", key="ins_bulk"):
        st.button("Select page", key="sel_page", on_click=select_page, args=(page_ids, True))
        st.button("Clear", key="sel_none", on_click=select_page, args=(page_ids, False))
        st.caption(f"{n} selected:")
        for action in ("acknowledge", "resolve", "reopen", "unmute"):
            st.button(action.capitalize(), key=f"bulk_{action}", on_click=act,
                      args=(chosen, action), disabled=not n)
        label = st.selectbox("Mute for", list(MUTE_FOR), key="bulk_mute_for",
                             label_visibility="collapsed", width=120)
        st.button("Mute", key="bulk_mute", on_click=act,
                  args=(chosen, "mute", MUTE_FOR[label or "1 hour"]), disabled=not n)


def _type_mutes(snap: data.Snapshot, types: list[str], can_act: bool = True) -> None:
    mutes = data.type_mutes(snap)
    with st.expander(f"Mute a whole type ({len(mutes)} muted)"):
        for m in mutes:
            c1, c2 = st.columns([5, 1])
            c1.text(f"{m['insight_type']}: muted until {ui.when(m['until'])} by {m['by']}")
            if can_act:
                c2.button("Unmute", key=f"unmute_type_{m['insight_type']}", on_click=mute_type,
                          args=(m["insight_type"], None))
        if not can_act:
            return
        c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
        kind = c1.selectbox("Type", types, key="mute_type_pick", index=None)
        label = c2.selectbox("For", list(MUTE_FOR), key="mute_type_for")
        c3.button("Mute type", key="mute_type_go", on_click=mute_type,
                  args=(kind, MUTE_FOR[label or "1 hour"]), disabled=kind is None)


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    if notice := st.session_state.pop(NOTICE, None):
        (st.success if notice[0] == "success" else st.warning)(notice[1])
    everything = data.insights(snap)
    if not everything:
        ui.empty("No insights yet: the coordinator writes them as it reviews metrics and "
                 "errors on each tick (`bga run`); services add their own with `add_insight`.")
        return
    counts = data.insight_counts(snap, auth.viewer())
    seen = data.insights_seen_at(snap, auth.viewer())
    by = counts["by_status"]
    m = st.columns([1, 1, 1, 1, 1, 1.4], vertical_alignment="bottom")
    m[0].metric("Open", counts["open"], help="open or regressed, not muted")
    m[1].metric("Regressed", by["regressed"])
    m[2].metric("Acknowledged", by["acknowledged"])
    m[3].metric("Resolved", by["resolved"])
    m[4].metric("Muted", by["muted"])
    with m[5]:
        st.metric("New since you last looked", counts["new"],
                  help=f"opened or regressed since {ui.when(seen)}" if seen
                  else "never marked seen: every open insight")
        st.button("Mark all seen", key="ins_seen", on_click=mark_seen)

    types = sorted({i["insight_type"] for i in everything})
    state = st.segmented_control("State", list(STATES), default="Needs attention",
                                 key="ins_state", required=True)
    c1, c2, c3 = st.columns([1.5, 2.5, 2], vertical_alignment="bottom")
    priorities = c1.multiselect("Priority", list(reversed(data.PRIORITIES)), key="ins_priority")
    chosen_types = c2.multiselect("Type", types, key="ins_type")
    text = c3.text_input("Search", key="ins_search", placeholder="summary, type, source")
    wanted = STATES[state or "Needs attention"]
    needle = (text or "").strip().lower()
    shown = [i for i in everything
             if (not priorities or i["priority"] in priorities)
             and (not chosen_types or i["insight_type"] in chosen_types)
             and (wanted is None or i["state"] in wanted)
             and (not needle or needle in f"{i['insight_type']} {i['source_agent']} "
                                          f"{i['content'].get('summary', '')}".lower())]
    can_act = auth.allowed("operator")  # the writes themselves are gated too (dashboard.data)
    _type_mutes(snap, types, can_act)
    if not shown:
        ui.empty("No insight matches these filters.")
        return
    pages = (len(shown) + PAGE_SIZE - 1) // PAGE_SIZE
    if st.session_state.get("ins_page", 1) > pages:
        st.session_state["ins_page"] = pages
    page = 1
    if pages > 1:
        page = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages,
                                   key="ins_page", width=160))
    start = (page - 1) * PAGE_SIZE
    on_page = shown[start:start + PAGE_SIZE]
    st.caption(f"{start + 1}-{start + len(on_page)} of {len(shown)} insights shown, "
               f"{PAGE_SIZE} a page")
    if can_act:
        _bulk_bar([i["insight_id"] for i in on_page])
    for i in on_page:
        card(i, snap.now, can_act=can_act)


st.title("Insights")
ui.live(body)
