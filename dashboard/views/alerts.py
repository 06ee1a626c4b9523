"""Alerts: the configured channels and their routes, and the delivery history (every message
the sender made: channel, status, tries, last error, the alerts it carried)."""

from __future__ import annotations

import streamlit as st

from dashboard import data, ui

STATUS_WORD = {"sent": "sent", "pending": "retrying", "dropped": "dropped (gave up)"}


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    alerts = data.config_values(snap).get("alerts") or {}
    channels = alerts.get("channels") or {}
    history = data.alert_history()
    counts = history["counts"]
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Waiting (digest window)", counts.get("waiting", 0))
    c2.metric("Retrying", counts.get("pending", 0))
    c3.metric("Sent", counts.get("sent", 0))
    c4.metric("Dropped", counts.get("dropped", 0))
    st.subheader("Channels")
    if not channels:
        ui.empty("No alert channel is configured. Add one under `alerts.channels.<name>` "
                 "(type webhook, slack or email); where it sends comes from the sender's "
                 "environment (`BGA_ALERT_<NAME>_URL`, ...), then run `bga alerts run`.")
    else:
        ui.table([{"channel": name, "type": ch["type"], "enabled": ch["enabled"],
                   "priorities": ", ".join(ch["priorities"]),
                   "types": ", ".join(ch["types"]) or "all",
                   "excluded": ", ".join(ch["exclude_types"]),
                   "digest (s)": alerts["digest_s"] if ch["digest_s"] is None
                   else ch["digest_s"],
                   "repeat (s)": alerts["repeat_s"] if ch["repeat_s"] is None
                   else ch["repeat_s"]}
                  for name, ch in sorted(channels.items())])
    st.subheader("Delivery history")
    messages = history["messages"]
    if not messages:
        ui.empty("No alert message yet.")
        return
    ui.table([{"created": ui.when(m["created_at"]), "channel": m["channel"],
               "status": STATUS_WORD.get(m["status"], m["status"]), "alerts": m["alerts"],
               "tries": m["attempts"], "last try": ui.when(m["last_try_at"]),
               "sent": ui.when(m["sent_at"]) if m["sent_at"] else "",
               "last error": m["last_error"] or "",
               "what": "; ".join(f"{e['event']} {e['insight_type']}: {e['summary']}"
                                 for e in m["events"][:3])
                       + (f" (+{len(m['events']) - 3})" if len(m["events"]) > 3 else ""),
               "key": m["key"]} for m in messages])


st.title("Alerts")
ui.live(body)
