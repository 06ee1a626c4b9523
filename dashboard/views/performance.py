"""Performance: rate and p50/p95/p99 per series over 1 h / 24 h / 7 d, and the summary table."""

from __future__ import annotations

import streamlit as st

from dashboard import data, sections, ui

MAX_CHARTS = 6


def chart(rows: list[dict], window: list[float], *, mark: str, y: str,
          colour: bool = False) -> None:
    """A Vega-Lite chart from a spec (an Altair-built chart costs ~100 ms each to build)."""
    encoding: dict = {"x": {"field": "time", "type": "temporal", "title": None,
                            "scale": {"domain": window}},
                      "y": {"field": "value", "type": "quantitative", "title": y}}
    if colour:
        encoding["color"] = {"field": "quantile", "type": "nominal", "title": None,
                             "sort": ["p50", "p95", "p99"]}
        encoding["tooltip"] = [{"field": "time", "type": "temporal", "format": "%H:%M"},
                               {"field": "quantile"}, {"field": "value", "format": ".2f"}]
    style = {"type": mark, "tooltip": True} | ({"point": True} if mark == "line" else {})
    st.vega_lite_chart(rows, {"mark": style, "encoding": encoding,
                              "height": 200}, width="stretch")


def charts(snap: data.Snapshot, series: str, hours: float, unit: str | None) -> None:
    points = data.series_points(snap, series, hours)
    if not points:
        ui.empty(f"No samples of {series} in this window.")
        return
    window = [(snap.now - hours * 3600) * 1000, snap.now * 1000]
    left, right = st.columns(2)
    with left:
        chart([{"time": p["bucket"] * 1000, "quantile": q, "value": p[q]}
               for p in points for q in ("p50", "p95", "p99")], window,
              mark="line", y=f"p50 / p95 / p99{f' ({unit})' if unit else ''}", colour=True)
    with right:
        chart([{"time": p["bucket"] * 1000, "value": p["rate"]} for p in points], window,
              mark="bar", y="rate (samples / s)")


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    label = st.segmented_control("Window", list(data.WINDOWS), default="1 h", key="perf_window",
                                 required=True)
    hours = data.WINDOWS[label or "1 h"]
    perf = data.performance(snap, hours)
    st.subheader(f"Summary, last {label}")
    sections.performance_table(perf)
    if not perf["series"]:
        return
    overall = perf["overall"]
    c1, c2, c3 = st.columns(3)
    c1.metric("Samples", f"{overall['count']:,}")
    c2.metric("Series", len(perf["series"]))
    c3.metric("Rate (all series)", f"{overall['rate']:.2f} / s")
    names = list(perf["series"])
    busiest = sorted(names, key=lambda n: -perf["series"][n]["count"])[:MAX_CHARTS]
    kept = st.session_state.get("perf_series")  # the user's choice survives refreshes
    st.session_state["perf_series"] = [n for n in kept if n in names] if kept is not None \
        else [n for n in names if n in busiest]
    chosen = st.multiselect("Series to chart (default: the busiest)", names, key="perf_series")
    for name in chosen:
        st.markdown(f"**{ui.safe_text(name)}**")
        charts(snap, name, hours, perf["series"][name]["unit"])


st.title("Performance")
ui.live(body)
