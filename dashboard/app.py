"""Entry page of the dashboard: ``bga dashboard`` or ``streamlit run dashboard/app.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a plain checkout, not only from an installed package
    sys.path.insert(0, str(ROOT))

from dashboard import auth, data, ui  # noqa: E402

# Not "pages/": Streamlit runs a folder of that name as an old-style multipage app, and a
# first visitor of /insights on a fresh server would get that page without this entry page.
PAGES = Path(__file__).parent / "views"
# A file, not ":material/...": Streamlit fetches a material favicon from fonts.gstatic.com,
# and the dashboard makes no outbound request.
ICON = Path(__file__).parent / "static" / "favicon.png"
# Streamlit's wide layout keeps 5rem on each side: at 1400 px with the sidebar open that
# hides table columns; a tighter frame fits the Agents table and four metric cards a row.
FRAME_CSS = "<style>.stMainBlockContainer {padding: 2.5rem 2rem 3rem 2rem;}</style>"

st.set_page_config(page_title="Background Agents", page_icon=str(ICON), layout="wide")
st.html(FRAME_CSS)
# the pages are named even before a login (so the page asked for opens after it), not shown
page = st.navigation({
    "Now": [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:",
                default=True),
        st.Page(PAGES / "agents.py", title="Agents", icon=":material/smart_toy:"),
        st.Page(PAGES / "performance.py", title="Performance", icon=":material/speed:"),
        st.Page(PAGES / "errors.py", title="Error patterns", icon=":material/bug_report:"),
        st.Page(PAGES / "insights.py", title="Insights", icon=":material/lightbulb:"),
        st.Page(PAGES / "optimizations.py", title="Optimizations", icon=":material/tune:"),
        st.Page(PAGES / "alerts.py", title="Alerts", icon=":material/notifications:"),
    ],
    "Manage": [
        st.Page(PAGES / "configuration.py", title="Configuration", icon=":material/settings:"),
        st.Page(PAGES / "time_travel.py", title="Time travel", icon=":material/history:"),
        st.Page(PAGES / "export.py", title="Export", icon=":material/download:"),
    ],
}, position="sidebar" if auth.may_look() else "hidden")
me = auth.gate_page()  # the login form (and nothing else) until the session may look
with st.sidebar:
    # pills, not a select box: a select box's scripts (twenty files) would be one more thing
    # a first visit of the Overview or the Agents page loads before it shows anything
    st.segmented_control("Refresh every", ui.REFRESH_CHOICES, key=ui.REFRESH_KEY,
                         default=ui.DEFAULT_REFRESH_S, required=True,
                         format_func=lambda s: f"{s} s" if s else "off")
    if st.button("Refresh now", icon=":material/refresh:"):
        data.refresh()
    st.caption(f"State: `{data.display_url(data.configured_url())}`")
    auth.sidebar(me)
page.run()
