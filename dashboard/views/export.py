"""Export: download the state snapshot (secrets redacted) as JSON."""

from __future__ import annotations

import time

import streamlit as st

from dashboard import data, ui


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    # built on click, not on every refresh: a full-retention export takes seconds to build
    st.download_button("Download state JSON", lambda: data.export_json(snap),
                       key="export_download",
                       file_name=f"bga-state-{time.strftime('%Y%m%d-%H%M%S')}.json",
                       mime="application/json", type="primary", icon=":material/download:")
    st.caption("Format `background-agents/state@1`; load it elsewhere with `bga restore FILE`.")
    sizes = data.channel_sizes(snap)
    ui.table([{"channel": name, "entries": n} for name, n in sizes.items()])


st.title("Export")
st.caption("The same document as `bga export`: every channel of the state, secrets redacted.")
ui.live(body)
