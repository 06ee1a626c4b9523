"""Configuration: the current config and an editor whose bad values are refused."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from dashboard import auth, data, ui

NEW_KEY = "(another key…)"


def parse(text: str) -> Any:
    """A JSON value (``120``, ``true``, ``"x"``, ``{...}``); anything else is a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def editor(keys: dict[str, Any]) -> None:
    st.subheader("Change a value")
    c1, c2 = st.columns([2, 2])
    key = c1.selectbox("Key", [*keys, NEW_KEY], key="cfg_key")
    if key == NEW_KEY:
        key = c1.text_input("Dotted key", key="cfg_new_key",
                            placeholder="agents.profile_import.batch_size").strip()
    current = keys.get(key or "")
    c2.text_input("New value (JSON: 120, 2.5, true, \"text\")", key="cfg_value",
                  placeholder=json.dumps(current) if current is not None else "")
    if current is not None:
        c2.caption(f"current: `{json.dumps(current)}`")
    if st.button("Save", key="cfg_save", type="primary"):
        raw = st.session_state.get("cfg_value", "")
        if not key or not raw.strip():
            st.error("Pick a key and type a value.")
            return
        try:
            data.update_config({key: parse(raw)})
        except (data.InvalidInput, auth.Forbidden) as exc:
            st.error(f"Refused, nothing was written: {exc}")
        except data.Unavailable as exc:
            st.error(str(exc))
        else:
            st.success(f"Saved {key} = {raw}")


def body() -> None:
    snap = data.load()
    if not snap.live:
        return
    if auth.allowed("operator"):  # the write itself is gated too (data.update_config)
        editor(data.config_keys(snap))
    else:
        st.caption("Read-only: changing the configuration needs the operator role.")
    snap = data.load()  # after a save, show what is now in force
    st.subheader("Current configuration")
    ui.freshness(snap, refreshing=False)  # no refresh while someone types a value
    if change := data.system_values(snap).get("config_change"):
        st.caption(ui.safe_text(f"Last changed {ui.when(change.get('at'))} by "
                                f"{change.get('by')}: {', '.join(change.get('keys') or [])}"))
    values = data.config_values(snap)
    tabs = st.tabs(list(values))
    for tab, content in zip(tabs, values.values(), strict=True):
        with tab:
            st.json(content)


st.title("Configuration")
st.caption("Values are validated against the whole configuration before anything is written; "
           "secrets never go here (use the environment or .env).")
ui.guarded(body)()
