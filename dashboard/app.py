"""Entry page of the dashboard: ``bga dashboard`` or ``streamlit run dashboard/app.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a plain checkout, not only from an installed package
    sys.path.insert(0, str(ROOT))

from dashboard import data, ui  # noqa: E402

# Not "pages/": Streamlit runs a folder of that name as an old-style multipage app, and a
# first visitor of /insights on a fresh server would get that page without this entry page.
PAGES = Path(__file__).parent / "views"

# an emoji favicon is drawn locally; a :material: one (also a page's own icon, when it becomes
# the favicon) is fetched from fonts.gstatic.com: no request may leave the viewer's browser
st.set_page_config(page_title="Background Agents", page_icon="📈", layout="wide")
page = st.navigation({
    "Now": [
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:",
                default=True),
        st.Page(PAGES / "agents.py", title="Agents", icon=":material/smart_toy:"),
        st.Page(PAGES / "performance.py", title="Performance", icon=":material/speed:"),
        st.Page(PAGES / "errors.py", title="Error patterns", icon=":material/bug_report:"),
        st.Page(PAGES / "insights.py", title="Insights", icon=":material/lightbulb:"),
        st.Page(PAGES / "optimizations.py", title="Optimizations", icon=":material/tune:"),
    ],
    "Manage": [
        st.Page(PAGES / "configuration.py", title="Configuration", icon=":material/settings:"),
        st.Page(PAGES / "time_travel.py", title="Time travel", icon=":material/history:"),
        st.Page(PAGES / "export.py", title="Export", icon=":material/download:"),
    ],
})
with st.sidebar:
    st.selectbox("Refresh every", ui.REFRESH_CHOICES, key=ui.REFRESH_KEY,
                 index=ui.REFRESH_CHOICES.index(ui.DEFAULT_REFRESH_S),
                 format_func=lambda s: f"{s} s" if s else "off (manual)")
    if st.button("Refresh now", icon=":material/refresh:"):
        data.refresh()
    st.caption(f"State: `{data.display_url(data.configured_url())}`")
page.run()
