"""Small view helpers shared by the pages: colours, formatting, live refresh, empty states.

No data access here: pages get their data from ``dashboard.data`` and pass it in.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.data import Snapshot, Unavailable

COLOURS: dict[str, str] = {
    "healthy": "green", "degraded": "orange", "critical": "red",
    "active": "green", "ok": "green", "running": "green", "stale": "orange", "dead": "red",
    "error": "red", "timeout": "orange", "unknown": "gray",
    "high": "orange", "medium": "blue", "low": "gray",
    "kept": "green", "applied": "blue", "proposed": "blue", "rolled_back": "orange",
    "failed": "red", "skipped": "gray",
}
HEX: dict[str, str] = {"green": "#1e9e5a", "orange": "#d97706", "red": "#dc2626",
                       "blue": "#2563eb", "gray": "#6b7280"}
REFRESH_CHOICES: tuple[int, ...] = (0, 2, 5, 10, 30, 60)
DEFAULT_REFRESH_S = 5
REFRESH_KEY = "refresh_s"


# the characters that make Markdown act (images, links, code spans, emphasis, math, HTML,
# Streamlit's :colour[...] directives); "_" and "." stay as they are, so names look the same
_MARKUP = re.compile(r"([\\`*\[\]()!<>|~$#])")
WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"://|(?i:www)\.|@")


def safe_text(value: object) -> str:
    """User-written text (insight content, error messages, agent names, sources) for
    ``st.markdown`` and widget labels: markup characters escaped, so it shows as typed. No image
    is fetched, no link is made (not even an autolinked URL), a backtick cannot end a code
    span."""
    text = " ".join(str(value).split())  # no headings, lists or blocks from line breaks
    # GFM autolinks bare URLs, www. names and e-mail addresses even after escaping: an
    # invisible word joiner inside "://", "www." and "@" keeps them text
    text = _AUTOLINK.sub(lambda m: m.group(0)[:-1] + WORD_JOINER + m.group(0)[-1], text)
    return _MARKUP.sub(r"\\\1", text)


def colour(word: str | None) -> str:
    return COLOURS.get(str(word), "gray")


def dot(word: str | None, text: str | None = None) -> str:
    """Markdown ``:green[● active]``: a status word in its colour (captions, markdown)."""
    return f":{colour(word)}[● {text if text is not None else word or 'unknown'}]"


def badge(word: str | None) -> None:
    st.badge(str(word or "unknown"), color=colour(word))  # type: ignore[arg-type]


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} d ago"


def when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def num(value: float | None, unit: str | None = None) -> str:
    """A metric value as shown everywhere on the dashboard."""
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.1f}" if abs(value) >= 10 \
        else f"{value:,.2f}"
    return f"{text} {unit}" if unit else text


def refresh_every() -> int:
    return int(st.session_state.get(REFRESH_KEY, DEFAULT_REFRESH_S))


def live(body: Callable[[], None]) -> None:
    """Run ``body`` as a fragment that re-runs itself every ``refresh_every()`` seconds (the
    page does not reload; only this part re-renders)."""
    every = refresh_every()
    st.fragment(guarded(body), run_every=every or None)()


def guarded(body: Callable[[], None]) -> Callable[[], None]:
    """``body`` that shows a database it cannot read as one message (no traceback on the
    page or in the log); the next refresh tries again."""

    @functools.wraps(body)  # the fragment's identity stays the page's body
    def run() -> None:
        try:
            body()
        except Unavailable as exc:
            st.error(str(exc), icon=":material/database:")

    return run


def freshness(snap: Snapshot, *, refreshing: bool = True) -> None:
    """One caption line: how fresh the data on screen is."""
    if not snap.live:
        st.caption(f"State as of {when(snap.now)} (checkpoint {snap.checkpoint_id})")
        return
    every = refresh_every() if refreshing else 0
    pending = f" · {snap.pending:,} events waiting for the next tick" if snap.pending else ""
    mode = f"refreshes every {every} s" if every else "not refreshed automatically"
    st.caption(f"Updated {time.strftime('%H:%M:%S', time.localtime(snap.now))} · "
               f"read in {snap.loaded_in_s * 1000:.0f} ms · {mode}{pending}")


def empty(message: str) -> None:
    st.info(message, icon=":material/info:")


def table(rows: list[dict[str, Any]], *, status: tuple[str, ...] = (),
          column_config: dict[str, Any] | None = None) -> None:
    """A full-width table; ``status`` columns hold status words, shown as ``● word`` in their
    colour."""
    frame = pd.DataFrame(rows)
    shown: Any = frame
    cols: list[Hashable] = [c for c in status if c in frame.columns]
    if cols and not frame.empty:
        for c in cols:
            frame[c] = frame[c].map(lambda w: f"● {w}")
        shown = frame.style.map(lambda v: f"color: {HEX[colour(str(v)[2:])]}", subset=cols)
    st.dataframe(shown, hide_index=True, width="stretch", column_config=column_config)
