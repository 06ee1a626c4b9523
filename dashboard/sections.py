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


def agents_table(snap: Snapshot, agents: list[dict[str, Any]], *, full: bool = False) -> None:
    if not agents:
        ui.empty(NO_AGENTS)
        return
    rows = []
    for a in agents:
        key = max(a["metrics"], key=lambda m: m["count"], default=None)
        row = {"agent": a["agent_id"], "liveness": a["liveness_now"], "status": a["status"],
               "last heartbeat": ui.age(a["heartbeat_age_s"])}
        if full:
            row |= {"runs on": a["runs_on"], "kind": a["kind"], "schedule": a["schedule_text"],
                    "heartbeats": a["heartbeats"], "last error": a["last_error"] or "—",
                    "key metric": f"{key['name']} p95 {ui.num(key['p95'], key['unit'])}"
                    if key else "—",
                    "activity (1 h)": a["activity"]}
        rows.append(row)
    order = ["agent", "status", "liveness", "last heartbeat", "runs on", "last error",
             "activity (1 h)", "key metric", "kind", "schedule", "heartbeats"]
    config = {"activity (1 h)": st.column_config.BarChartColumn(
                  y_min=0, help="samples reported per minute over the last hour"),
              "last error": st.column_config.TextColumn(width="medium")}
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


def agent_metrics(agents: list[dict[str, Any]], per_agent: int = 4) -> None:
    """A card per agent and series (its busiest ``per_agent``): p95 over the last hour, and
    p50 per minute as a line."""
    cards = [(a["agent_id"], m) for a in agents
             for m in sorted(a["metrics"], key=lambda m: -m["count"])[:per_agent]]
    if not cards:
        ui.empty("No agent has reported a metric in the last hour.")
    hidden = sum(len(a["metrics"]) for a in agents) - len(cards)
    if hidden:
        st.caption(f"The {per_agent} busiest series of each agent; {hidden} more on the "
                   "Performance page.")
    for row in range(0, len(cards), 4):
        cols = st.columns(4)
        for col, (agent_id, m) in zip(cols, cards[row:row + 4], strict=False):
            col.metric(
                ui.safe_text(f"{agent_id} · {m['name']} · p95"), ui.num(m["p95"], m["unit"]),
                help=f"last hour: {m['count']:,} samples; p50 {ui.num(m['p50'], m['unit'])}, "
                     f"p99 {ui.num(m['p99'], m['unit'])}; the line is p50 per minute",
                chart_data=m["spark"] if len(m["spark"]) > 1 else None, border=True)


def performance_table(perf: dict[str, Any]) -> None:
    if not perf["series"]:
        ui.empty(NO_METRICS)
        return
    rows = [{"series": name, "count": s["count"], "rate / s": s["rate"], "mean": s["mean"],
             "p50": s["p50"], "p95": s["p95"], "p99": s["p99"], "min": s["min"],
             "max": s["max"], "unit": s["unit"] or ""} for name, s in perf["series"].items()]
    fmt = {k: st.column_config.NumberColumn(format="%.2f")
           for k in ("rate / s", "mean", "p50", "p95", "p99", "min", "max")}
    ui.table(rows, column_config=fmt)


def error_table(patterns: list[dict[str, Any]], hours: float) -> None:
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
    ui.table(rows, column_config=config)


def insight_rows(insights: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"priority": i["priority"], "type": i["insight_type"],
             "summary": str(i["content"].get("summary", "")), "source": i["source_agent"],
             "occurrences": i["occurrences"], "last seen": ui.when(i["last_seen"]),
             "acted upon": ui.when(i["acted_upon_at"]) if i["acted_upon"] else "open"}
            for i in insights]


def snapshot_view(snap: Snapshot) -> None:
    """Everything about one snapshot, read-only (the time-travel page)."""
    agents = data.agents(snap)
    health(snap, agents)
    open_insights(snap)
    tabs = st.tabs(["Agents", "Insights", "Error patterns (24 h)", "Performance (1 h)"])
    with tabs[0]:
        agents_table(snap, agents, full=True)
    with tabs[1]:
        rows = insight_rows(data.insights(snap))
        if rows:
            ui.table(rows, status=("priority",))
        else:
            ui.empty("No insights in this checkpoint.")
    with tabs[2]:
        error_table(data.error_patterns(snap, 24), 24)
    with tabs[3]:
        performance_table(data.performance(snap, 1))
