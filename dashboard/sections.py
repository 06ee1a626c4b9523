"""Read-only views of one snapshot, shared by the live pages and the time-travel page."""

from __future__ import annotations

from typing import Any

import streamlit as st

from dashboard import data, ui
from dashboard.data import PRIORITIES, Snapshot

NO_AGENTS = "No agents yet: run `bga run` (or `bga run --demo` for sample activity), or " \
            "register one through the SharedState API."
NO_TICK = "No tick yet: run `bga run` (or `bga tick` once)."
NO_METRICS = "No metrics yet: agents report them with `add_performance_metric` " \
             "(try `bga run --demo`)."


def health(snap: Snapshot, agents: list[dict[str, Any]]) -> None:
    values = data.system_values(snap)
    summary = data.summary(snap)
    h, tick = values.get("health"), values.get("last_tick")
    counts = data.liveness_counts(agents)
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        st.metric("Health score", f"{h['score']:.0f}/100" if h else "—", border=True)
        if h:
            ui.badge(h["status"])
        else:
            st.caption(NO_TICK)
    with c2:
        ago = (ui.age(snap.now - tick["started_at"]) if snap.live else
               ui.when(tick["started_at"])[11:]) if tick else "—"
        st.metric("Last tick", ago, border=True)
        if tick:
            st.caption(f"tick #{tick['n']} at {ui.when(tick['started_at'])} · took "
                       f"{tick['duration_ms']:,.0f} ms · ran {len(tick['agents_run'])} agents")
        else:
            st.caption(NO_TICK)
    with c3:
        st.metric("Agents", len(agents), border=True)
        st.caption(" · ".join(ui.dot(k if counts[k] else None, f"{counts[k]} {k}")
                              for k in ("active", "stale", "dead")))
    with c4:
        errs = summary["error_patterns"]
        st.metric("Error patterns (1 h)", errs["active_1h"], border=True)
        st.caption(f"{errs['events_1h']:,} errors in the last hour · {errs['total']} known")
    if h and h.get("reasons") and h["status"] != "healthy":
        (st.error if h["status"] == "critical" else st.warning)(
            f"Health {h['status']}: " + ", ".join(h["reasons"]))
    elif h and h.get("reasons"):
        st.caption("Health score lowered by: " + ", ".join(h["reasons"]))


def open_insights(snap: Snapshot) -> None:
    by_pri = data.summary(snap)["insights"]["open_by_priority"]
    cols = st.columns(len(PRIORITIES))
    for col, pri in zip(cols, reversed(PRIORITIES), strict=True):
        col.metric(f"Open {pri}", by_pri[pri], border=True)


def series_label(series: str) -> str:
    """``agent · metric`` for a series key ``agent/metric``."""
    agent, _, name = series.partition("/")
    return f"{agent} · {name}" if name else series


def key_metric(snap: Snapshot, agent: dict[str, Any]) -> dict[str, Any] | None:
    """The agent's busiest series, its own ones before the internal ones."""
    return min(agent["metrics"], key=lambda m: (data.is_internal(m["series"], snap), -m["count"]),
               default=None)


def agents_table(snap: Snapshot, agents: list[dict[str, Any]], *, full: bool = False) -> None:
    if not agents:
        ui.empty(NO_AGENTS)
        return
    rows = []
    for a in agents:
        key = key_metric(snap, a)
        row = {"agent": a["agent_id"], "liveness": a["liveness_now"], "status": a["status"],
               "last heartbeat": ui.age(a["heartbeat_age_s"])}
        if full:
            row |= {"runs on": a["runs_on"], "kind": a["kind"], "schedule": a["schedule_text"],
                    "heartbeats": a["heartbeats"], "last error": a["last_error"] or "—",
                    "key metric": f"{key['name']} p95 {ui.num(key['p95'], key['unit'])}"
                    if key else "—",
                    "activity (1 h)": a["activity"]}
        rows.append(row)
    # what matters first, the long free text last: at 1400 px everything up to "runs on" shows
    order = ["agent", "status", "liveness", "last heartbeat", "kind", "schedule", "key metric",
             "activity (1 h)", "runs on", "heartbeats", "last error"]
    config = {"activity (1 h)": st.column_config.BarChartColumn(
                  y_min=0, width="small", help="samples reported per minute over the last hour"),
              "agent": st.column_config.TextColumn(pinned=True),
              "key metric": st.column_config.TextColumn(
                  help="p95 over the last hour of the agent's busiest series"),
              "heartbeats": st.column_config.NumberColumn(width="small"),
              "last error": st.column_config.TextColumn(width="large")}
    ui.table([{k: r[k] for k in order if k in r} for r in rows], status=("status", "liveness"),
             column_config=config)


def processes_table(rows: list[dict[str, Any]]) -> None:
    """The leading coordinator and every worker process, whatever host it runs on."""
    if not rows:
        ui.empty("No process has reported yet: `bga run` ticks, `bga worker --agents NAME` "
                 "runs agents in their own process.")
        return
    ui.table([{"process": r["process"], "role": r["role"]
               + (", coordinator-only" if r["coordinator_only"] else ""),
               "host": r["host"] or "—", "pid": r["pid"], "last seen": ui.age(r["age_s"]),
               "agents": ", ".join(r["agents"]) or "—"} for r in rows])


def agent_metrics(snap: Snapshot, agents: list[dict[str, Any]], *, internal: bool = False,
                  lines: bool = False, per_agent: int = 4, per_row: int = 4) -> None:
    """Per agent, a card per series (its busiest ``per_agent``, one row): p95 over the last
    hour, and with ``lines`` p50 per minute as a line (a chart each, drawn on demand: every
    card and chart is browser work a new visit waits for). Internal series only when
    ``internal``."""
    shown = hidden = internal_hidden = 0
    for a in agents:
        own = [m for m in a["metrics"] if internal or not data.is_internal(m["series"], snap)]
        internal_hidden += len(a["metrics"]) - len(own)
        own.sort(key=lambda m: -m["count"])
        hidden += max(0, len(own) - per_agent)
        if not own:
            continue
        shown += 1
        st.markdown(f"**{ui.safe_text(a['agent_id'])}** · {ui.safe_text(a['kind'])} · "
                    f"{len(own)} series")
        cards = own[:per_agent]
        for row in range(0, len(cards), per_row):
            cols = st.columns(per_row)
            for col, m in zip(cols, cards[row:row + per_row], strict=False):
                line = data.spark(snap, m["series"]) if lines else []
                col.metric(
                    ui.safe_text(m["name"]), ui.num(m["p95"], m["unit"]),
                    help=f"{ui.safe_text(m['series'])}, p95 over the last hour: "
                         f"{m['count']:,} samples; p50 {ui.num(m['p50'], m['unit'])}, "
                         f"p99 {ui.num(m['p99'], m['unit'])}"
                         + ("; the line is p50 per minute" if lines else ""),
                    chart_data=line if len(line) > 1 else None, border=True)
    if not shown:
        ui.empty("No agent has reported a metric in the last hour.")
    notes = []
    if hidden:
        notes.append(f"{hidden} quieter series are on the Performance page")
    if internal_hidden:
        notes.append(f"{internal_hidden} internal series hidden")
    if notes:
        st.caption("; ".join(notes) + ".")


def performance_table(perf: dict[str, Any], *, hidden: int = 0) -> None:
    """One row per series, grouped by agent (``hidden``: internal series left out)."""
    if not perf["series"]:
        ui.empty(NO_METRICS)
        return
    rows = [{"agent": s["source_agent"], "series": s["name"], "count": s["count"],
             "rate / s": s["rate"], "mean": s["mean"], "p50": s["p50"], "p95": s["p95"],
             "p99": s["p99"], "min": s["min"], "max": s["max"], "unit": s["unit"] or ""}
            for _, s in sorted(perf["series"].items())]
    fmt: dict[str, Any] = {k: st.column_config.NumberColumn(format="%.2f")
                           for k in ("rate / s", "mean", "p50", "p95", "p99", "min", "max")}
    fmt["agent"] = st.column_config.TextColumn(pinned=True)
    fmt["series"] = st.column_config.TextColumn(width="medium")
    ui.table(rows, column_config=fmt)
    if hidden:
        st.caption(f"{hidden} internal series hidden.")


COMPACT_ERROR_COLUMNS = ("message", "type", "count", "trend", "last seen", "sources")


def error_table(patterns: list[dict[str, Any]], hours: float, *, compact: bool = False) -> None:
    """``compact``: the columns that fit beside the sidebar at 1400 px (the Overview's)."""
    if not patterns:
        ui.empty(f"No errors in the last {hours:g} h. Agents report them with "
                 "`add_error_pattern`; a failing agent step is recorded automatically.")
        return
    rows = [{"message": p["normalized_message"], "type": p["error_type"],
             "count": p["frequency"], "trend": p["trend"], "total": p["count"],
             "first seen": ui.when(p["first_seen"]), "last seen": ui.when(p["last_seen"]),
             "sources": ", ".join(p["source_agents"]), "sample": p["sample_message"]}
            for p in patterns]
    width = patterns[0]["trend_bucket_s"]
    per = "minute" if width == 60 else "hour" if width == 3600 else "day"
    config = {"message": st.column_config.TextColumn(width="medium"),
              "count": st.column_config.NumberColumn(help=f"occurrences in the last {hours:g} h"),
              "total": st.column_config.NumberColumn(help="occurrences ever recorded"),
              "trend": st.column_config.BarChartColumn(f"trend (per {per})", y_min=0)}
    if compact:
        rows = [{k: r[k] for k in COMPACT_ERROR_COLUMNS} for r in rows]
    ui.table(rows, column_config=config)


def insight_rows(insights: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"priority": i["priority"], "type": i["insight_type"],
             "summary": str(i["content"].get("summary", "")), "source": i["source_agent"],
             "occurrences": i["occurrences"], "last seen": ui.when(i["last_seen"]),
             "acted upon": ui.when(i["acted_upon_at"]) if i["acted_upon"] else "open"}
            for i in insights]


SNAPSHOT_PARTS = ("Agents", "Insights", "Error patterns (24 h)", "Performance (1 h)")


def snapshot_view(snap: Snapshot) -> None:
    """Everything about one snapshot, read-only (the time-travel page); one part at a time,
    rendered when picked (a full state has hundreds of insights, patterns and series)."""
    health(snap, data.agents(snap, metrics=False))
    open_insights(snap)
    part = st.segmented_control("Show", SNAPSHOT_PARTS, default=SNAPSHOT_PARTS[0],
                                key="tt_part", required=True) or SNAPSHOT_PARTS[0]
    if part == "Agents":
        agents_table(snap, data.agents(snap), full=True)
    elif part == "Insights":
        rows = insight_rows(data.insights(snap))
        if rows:
            paged(rows, key="tt_insights", status=("priority",))
        else:
            ui.empty("No insights in this checkpoint.")
    elif part.startswith("Error"):
        error_table(data.error_patterns(snap, 24), 24)
    else:
        perf = data.performance(snap, 1)
        own = {n: s for n, s in perf["series"].items() if not data.is_internal(n, snap)}
        performance_table({**perf, "series": own}, hidden=len(perf["series"]) - len(own))


PAGE_ROWS = 100


def paged(rows: list[dict[str, Any]], *, key: str, status: tuple[str, ...] = (),
          column_config: dict[str, Any] | None = None, size: int = PAGE_ROWS) -> None:
    """A table of at most ``size`` rows with a page picker below it when there are more."""
    pages = max(1, -(-len(rows) // size))
    page = min(max(int(st.session_state.get(key, 1)), 1), pages)
    st.session_state[key] = page  # before the widget: clamped when the rows shrank
    ui.table(rows[(page - 1) * size:page * size], status=status, column_config=column_config)
    if pages > 1:
        c1, c2 = st.columns([1, 4], vertical_alignment="center")
        c1.number_input("Page", min_value=1, max_value=pages, key=key)
        c2.caption(f"rows {(page - 1) * size + 1}–{min(page * size, len(rows))} of "
                   f"{len(rows):,}")
