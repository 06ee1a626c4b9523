"""Performance: rate and p50/p95/p99 per series over 1 h / 24 h / 7 d or a custom range, the
summary table grouped by agent, and a detail view of one series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import streamlit as st

from dashboard import data, sections, ui

MAX_CHARTS = 3  # charted by default: two Vega views each, drawn before a visit is ready
CUSTOM = "Custom"
QUANTILES = ("p50", "p95", "p99")


def iso(ts: float) -> str:
    """An instant as ISO 8601 UTC: Vega-Lite parses it and draws it in the browser's zone. (A
    numeric millisecond ``scale.domain`` puts every mark at x=0 with Streamlit 1.67.)"""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def time_axis(start: float, end: float) -> dict[str, Any]:
    """An x axis over [start, end] with labels that say when: clock times for a day or less,
    dates beyond."""
    span = end - start
    axis: dict[str, Any] = {"title": None, "labelOverlap": True, "grid": True}
    if span <= 36 * 3600:
        axis["format"] = "%H:%M"
    else:
        axis |= {"format": "%a %d %b", "tickCount": {"interval": "day", "step": 1}}
    return {"scale": {"type": "time", "domain": [iso(start), iso(end)]}, "axis": axis}


def chart(rows: list[dict[str, Any]], start: float, end: float, *, kind: str, y: str,
          height: int = 200) -> None:
    """A Vega-Lite chart from a spec (an Altair-built chart costs ~100 ms each to build).

    ``kind="quantiles"``: p50 / p95 / p99 lines with a point per bucket (at the bucket's
    middle); ``kind="rate"``: one bar per bucket spanning it (``from`` to ``to``), from 0."""
    x = {"type": "temporal", **time_axis(start, end)}
    when = {"field": "from", "type": "temporal", "title": "bucket from",
            "format": "%Y-%m-%d %H:%M"}
    if kind == "quantiles":
        encoding: dict[str, Any] = {
            "x": {"field": "at", **x},
            "y": {"field": "value", "type": "quantitative", "title": y},
            "color": {"field": "quantile", "type": "nominal", "title": None,
                      "sort": list(QUANTILES), "legend": {"orient": "top"}},
            "tooltip": [when, {"field": "quantile"}, {"field": "value", "format": ",.2f"}]}
        mark: dict[str, Any] = {"type": "line", "point": True, "clip": True}
    else:
        encoding = {
            "x": {"field": "from", **x}, "x2": {"field": "to"},
            "y": {"field": "rate", "type": "quantitative", "title": y}, "y2": {"datum": 0},
            "tooltip": [when, {"field": "count", "title": "samples"},
                        {"field": "rate", "format": ",.3f", "title": "per second"}]}
        # a rect from (from, 0) to (to, rate): a bar with x2 alone would lie on its side
        mark = {"type": "rect", "clip": True}
    st.vega_lite_chart(rows, {"mark": mark, "encoding": encoding, "height": height},
                       width="stretch")


def chart_rows(points: list[dict[str, Any]], width: int
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(quantile rows, rate rows) for the two charts of one series."""
    lines, bars = [], []
    for p in points:
        b = p["bucket"]
        start, mid, stop = iso(b), iso(b + width / 2), iso(b + width)
        lines += [{"at": mid, "from": start, "quantile": q, "value": p[q]} for q in QUANTILES]
        bars.append({"from": start, "to": stop, "count": p["count"], "rate": p["rate"]})
    return lines, bars


def points_in(snap: data.Snapshot, series: str, hours: float, end: float) -> list[dict]:
    return [p for p in data.series_points(snap, series, hours) if p["bucket"] < end]


def charts(snap: data.Snapshot, series: str, hours: float, end: float, unit: str | None,
           *, height: int = 200) -> None:
    start = snap.now - hours * 3600
    points = points_in(snap, series, hours, end)
    if not points:
        last = data.last_sample(snap, series)
        ui.empty(f"No samples of {series} between {ui.when(start)} and {ui.when(end)}; "
                 + (f"the newest is from {ui.when(last)}." if last else "none retained."))
        return
    lines, bars = chart_rows(points, data.bucket_width(snap, hours))
    left, right = st.columns(2)
    with left:
        chart(lines, start, end, kind="quantiles",
              y=f"p50 / p95 / p99{f' ({unit})' if unit else ''}", height=height)
    with right:
        chart(bars, start, end, kind="rate", y="rate (samples / s)", height=height)


def window(snap: data.Snapshot) -> tuple[str, float, float]:
    """(label, hours back from now, end of the charted range) from the window controls."""
    label = st.segmented_control("Window", [*data.WINDOWS, CUSTOM], default="1 h",
                                 key="perf_window", required=True) or "1 h"
    if label != CUSTOM:
        return label, data.WINDOWS[label], snap.now
    now = datetime.fromtimestamp(snap.now).replace(second=0, microsecond=0)
    st.session_state.setdefault("perf_from", now - timedelta(hours=6))
    st.session_state.setdefault("perf_to", now + timedelta(minutes=1))
    c1, c2 = st.columns(2)
    start = c1.datetime_input("From", key="perf_from", step=timedelta(minutes=5))
    end = c2.datetime_input("To", key="perf_to", step=timedelta(minutes=5))
    lo, hi = start.timestamp(), min(end.timestamp(), snap.now)
    if hi <= lo:
        st.warning("“From” must be before “To” (and before now): showing the last hour.")
        return "1 h", 1.0, snap.now
    return f"{ui.when(lo)[:16]} to {ui.when(hi)[:16]}", (snap.now - lo) / 3600, hi


def body() -> None:
    snap = data.load()
    ui.freshness(snap)
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    with c1:
        label, hours, end = window(snap)
    internal = c2.toggle("Show internal series", key="perf_internal",
                         help="The system's own runs, mirrored by the bridge "
                              "(`langsmith_bridge/local/...`).")
    perf = data.performance(snap, hours)
    everything = perf["series"]
    series = {n: s for n, s in everything.items() if internal or not data.is_internal(n, snap)}
    width = data.bucket_width(snap, hours)
    st.caption(f"{ui.when(snap.now - hours * 3600)} to {ui.when(end)} in buckets of "
               f"{ui.age(width).removesuffix(' ago')}; chart times are in your browser's "
               "time zone.")
    st.subheader(f"Summary, {'last ' if label in data.WINDOWS else ''}{label}")
    if everything and not series:
        ui.empty(f"Only internal series in this window ({len(everything)}): turn on "
                 "“Show internal series” to see them.")
        return
    sections.performance_table({**perf, "series": series},
                               hidden=len(everything) - len(series))
    if not series:
        return
    overall = perf["overall"]
    m1, m2, m3 = st.columns(3)
    m1.metric("Samples (all series)", f"{overall['count']:,}")
    m2.metric("Series shown", f"{len(series)} of {len(everything)}")
    m3.metric("Rate (all series)", f"{overall['rate']:.2f} / s")
    names = list(series)
    busiest = sorted(names, key=lambda n: -series[n]["count"])[:MAX_CHARTS]
    kept = st.session_state.get("perf_series")  # the user's choice survives refreshes
    st.session_state["perf_series"] = [n for n in kept if n in names] if kept is not None \
        else [n for n in names if n in busiest]
    st.subheader("Charts")
    chosen = st.multiselect("Series to chart (default: the busiest)", names, key="perf_series",
                            format_func=sections.series_label)
    for n, name in enumerate(chosen):
        with st.container(key=f"perf_chart_{n}"):  # a stable handle for the browser test
            st.markdown(f"**{ui.safe_text(sections.series_label(name))}**")
            charts(snap, name, hours, end, series[name]["unit"])
    st.subheader("One series in detail")
    detail = st.selectbox("Series", names, index=None, key="perf_detail",
                          format_func=sections.series_label, placeholder="Pick a series")
    if detail is not None:
        detail_view(snap, detail, series[detail], hours, end)


def detail_view(snap: data.Snapshot, name: str, s: dict[str, Any], hours: float,
                end: float) -> None:
    unit = s["unit"]
    cols = st.columns(6)
    for col, key in zip(cols, ("count", "mean", "p50", "p95", "p99", "max"), strict=True):
        col.metric(key, f"{s[key]:,}" if key == "count" else ui.num(s[key], unit))
    charts(snap, name, hours, end, unit, height=300)
    points = points_in(snap, name, hours, end)
    if points:
        rows = [{"bucket from": ui.when(p["bucket"]), "count": p["count"], "rate / s": p["rate"],
                 "mean": p["mean"], "p50": p["p50"], "p95": p["p95"], "p99": p["p99"]}
                for p in reversed(points)]
        fmt = {k: st.column_config.NumberColumn(format="%.2f")
               for k in ("rate / s", "mean", "p50", "p95", "p99")}
        ui.table(rows, column_config=fmt)


st.title("Performance")
ui.live(body)
