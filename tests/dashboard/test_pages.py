"""Every dashboard page, run by Streamlit's AppTest against a state written through the API:
the numbers on the page are the numbers in the state, and the page's writes land."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import data, ui
from graph import runner
from state import PerformanceMetric, SharedState
from tests.dashboard.conftest import StateFixture, api

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"


@pytest.fixture
def dash(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``dash(url, page)``: the app on ``url``, switched to ``views/<page>.py``."""

    def open_page(url: str, page: str) -> AppTest:
        monkeypatch.setenv("BGA_DATABASE_URL", url)
        monkeypatch.setenv("BGA_DASHBOARD_ANONYMOUS", "operator")  # no login (test_login.py)
        data.refresh()
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return open_page


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def frame(at: AppTest, index: int = 0) -> pd.DataFrame:
    return at.dataframe[index].value


def rerun(at: AppTest) -> AppTest:
    data.refresh()  # a write made behind the dashboard's back: do not wait for the cache TTL
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# -- overview -------------------------------------------------------------------------------------


def test_overview_numbers_match_the_state(state_db: StateFixture, dash: Any) -> None:
    summary = api(state_db.url, SharedState.get_system_state)
    at = dash(state_db.url, "overview")
    shown = metrics(at)
    health = summary["values"]["health"]
    assert shown["Health score"] == f"{health['score']:.0f}/100"
    agent_ids = sorted(a["agent_id"] for a in api(state_db.url, SharedState.get_agents))
    assert {"bridge", "importer"} <= set(agent_ids)
    assert shown["Agents"] == str(summary["agents"]["registered"]) == str(len(agent_ids))
    assert shown["Error patterns (1 h)"] == str(summary["error_patterns"]["active_1h"]) == "2"
    for priority, n in summary["insights"]["open_by_priority"].items():
        assert shown[f"Open {priority}"] == str(n)
    assert shown["Open critical"] == "1"  # the critical one is open, the medium one acted upon
    assert shown["Open medium"] == "0"
    tick = summary["values"]["last_tick"]
    assert any(f"tick #{tick['n']}" in c.value for c in at.caption)
    agents = frame(at, 0)
    assert sorted(agents["agent"]) == agent_ids
    assert set(agents["liveness"]) == {"● active"}
    errors = frame(at, 1)
    counts = dict(zip(errors["type"], errors["count"], strict=True))
    assert counts == {"ValueError": 7, "TimeoutError": 2}


def test_overview_lists_the_most_frequent_error_patterns(state_db: StateFixture,
                                                         dash: Any) -> None:
    """Beyond ``TOP_ERRORS`` patterns the Overview lists the most frequent ones and says how
    many there are; the Error patterns page lists them all."""
    async def many(shared: SharedState) -> None:
        for i in range(12):
            for _ in range(i + 1):  # pattern i seen i + 1 times
                await shared.add_error_pattern(f"Kind{i}Error", f"failure number {i}", "importer")

    api(state_db.url, many)
    at = dash(state_db.url, "overview")
    errors = frame(at, 1)
    assert len(errors) == 10
    assert list(errors["count"]) == sorted(errors["count"], reverse=True)
    assert list(errors["type"])[:3] == ["Kind11Error", "Kind10Error", "Kind9Error"]
    assert any("The 10 most frequent of 14." in c.value for c in at.caption)
    assert len(frame(dash(state_db.url, "errors"))) == 14


def test_empty_state_tells_the_user_what_to_do(empty_db: str, dash: Any) -> None:
    at = dash(empty_db, "overview")
    assert metrics(at)["Agents"] == "0"
    assert any("No agents yet: run `bga run`" in i.value for i in at.info)
    insights = dash(empty_db, "insights")
    assert any("No insights yet" in i.value for i in insights.info)
    perf = dash(empty_db, "performance")
    assert any("No metrics yet" in i.value for i in perf.info)
    history = dash(empty_db, "time_travel")
    assert any("No checkpoint yet" in i.value for i in history.info)


def test_viewing_every_page_writes_nothing(state_db: StateFixture, dash: Any) -> None:
    async def marks(shared: SharedState) -> tuple[str | None, int, dict]:
        return (await shared.backend.latest_checkpoint_id(shared.thread_id),
                await shared.backend.pending_count(), await shared.export_state())

    before = api(state_db.url, marks)
    for page in ("overview", "agents", "performance", "errors", "insights", "optimizations",
                 "alerts", "configuration", "time_travel", "export"):
        dash(state_db.url, page)
    assert api(state_db.url, marks) == before


# -- agents and performance -----------------------------------------------------------------------


def test_agents_page_rows_and_metric_cards(state_db: StateFixture, dash: Any) -> None:
    agents = {a["agent_id"]: a for a in api(state_db.url, SharedState.get_agents)}
    perf = api(state_db.url, lambda s: s.get_performance_summary(hours=1))
    at = dash(state_db.url, "agents")
    table = frame(at).set_index("agent")
    assert set(table.index) == set(agents)
    for agent_id, a in agents.items():
        assert table.loc[agent_id, "kind"] == a["kind"]
        assert table.loc[agent_id, "schedule"] == f"every {a['interval_s']:g} s"
        assert table.loc[agent_id, "status"] == f"● {a['status']}"
        assert table.loc[agent_id, "heartbeats"] == a["heartbeats"]
    assert table.loc["importer", "schedule"] == "every 3600 s"
    assert table.loc["bridge", "last error"] == "TimeoutError: slow upstream"
    assert table.loc["importer", "last error"].startswith("ValueError: invalid email")
    assert sum(table.loc["importer", "activity (1 h)"]) == 100  # samples in the last hour
    latency = perf["series"]["importer/latency_ms"]
    assert metrics(at)["latency_ms"] == ui.num(latency["p95"], "ms")  # under "importer"
    assert any(m.value.startswith("**importer** · profile_import") for m in at.markdown)
    assert table.loc["importer", "key metric"] == f"latency_ms p95 {ui.num(latency['p95'], 'ms')}"


def test_agents_cards_draw_their_p50_line_on_demand(state_db: StateFixture, dash: Any) -> None:
    """A new visit draws the cards' numbers without a chart each; the toggle adds the line
    (p50 per minute), on the same cards."""
    api(state_db.url, lambda s: s.add_performance_metrics(  # a second minute: a line to draw
        PerformanceMetric(source_agent="importer", name="latency_ms", value=float(v), unit="ms",
                          timestamp=time.time() - 300) for v in (10, 20, 30)))
    at = dash(state_db.url, "agents")
    card = next(m for m in at.metric if m.label == "latency_ms")
    assert list(card.proto.chart_data) == []
    assert "the line is" not in card.proto.help
    at.toggle(key="agents_lines").set_value(True).run()
    card = next(m for m in at.metric if m.label == "latency_ms")
    snap = data.load_uncached(url=state_db.url)
    points = data.series_points(snap, "importer/latency_ms", 1)
    assert len(points) == 2
    assert list(card.proto.chart_data) == pytest.approx([p["p50"] for p in points])
    assert "the line is p50 per minute" in card.proto.help


def test_performance_summary_and_window(state_db: StateFixture, dash: Any) -> None:
    at = dash(state_db.url, "performance")
    for label, hours in (("1 h", 1), ("24 h", 24), ("7 d", 168)):
        at.segmented_control(key="perf_window").set_value(label).run()
        perf = api(state_db.url, lambda s, h=hours: s.get_performance_summary(hours=h))
        own = {n: s for n, s in perf["series"].items() if not data.is_internal(n)}
        assert any(h.value == f"Summary, last {label}" for h in at.subheader)
        table = frame(at)
        table.index = table["agent"] + "/" + table["series"]
        assert set(table.index) == set(own)
        assert list(table.index) == sorted(own)  # grouped by agent
        for name, s in own.items():
            assert table.loc[name, "count"] == s["count"]
            assert table.loc[name, "p95"] == pytest.approx(s["p95"])
        assert metrics(at)["Samples (all series)"] == f"{perf['overall']['count']:,}"
        assert metrics(at)["Series shown"] == f"{len(own)} of {len(perf['series'])}"
    charted = at.multiselect(key="perf_series").value
    counts = sorted((s["count"] for s in own.values()), reverse=True)
    assert len(charted) == min(3, len(counts))  # views/performance.py MAX_CHARTS, the busiest
    assert min(own[n]["count"] for n in charted) == counts[len(charted) - 1]
    assert "importer/latency_ms" in charted
    assert len(at.get("vega_lite_chart")) == 2 * len(charted)


def test_performance_internal_series_hidden_until_asked(state_db: StateFixture,
                                                        dash: Any) -> None:
    """The tick's own runs, mirrored by the bridge, are series ``langsmith_bridge/local/...``:
    hidden by default, all there with the toggle."""
    api(state_db.url, lambda sh: sh.add_performance_metrics(
        PerformanceMetric(source_agent="langsmith_bridge", name=f"local/chain:{node}/latency_ms",
                          value=float(i), unit="ms")
        for node in ("route", "plan") for i in range(3)))
    at = dash(state_db.url, "performance")
    perf = api(state_db.url, lambda s: s.get_performance_summary(hours=1))
    internal = [n for n in perf["series"] if data.is_internal(n)]
    assert sorted(internal) == ["langsmith_bridge/local/chain:plan/latency_ms",
                                "langsmith_bridge/local/chain:route/latency_ms"]
    assert not set(internal) & set(at.multiselect(key="perf_series").options)
    assert any(f"{len(internal)} internal series hidden" in c.value for c in at.caption)
    at.toggle(key="perf_internal").set_value(True).run()
    table = frame(at)
    assert set(table["agent"] + "/" + table["series"]) == set(perf["series"])


def test_performance_detail_and_custom_range(state_db: StateFixture, dash: Any) -> None:
    """One series in detail: its numbers and one row per bucket; a custom range that holds
    no sample says so and names the newest sample's time."""
    at = dash(state_db.url, "performance")
    at.selectbox(key="perf_detail").set_value("importer/latency_ms").run()
    s = api(state_db.url, lambda sh: sh.get_performance_summary(hours=1))["series"][
        "importer/latency_ms"]
    assert metrics(at)["p95"] == ui.num(s["p95"], "ms")
    assert metrics(at)["count"] == f"{s['count']:,}"
    buckets = frame(at, len(at.dataframe) - 1)
    assert buckets["count"].sum() == s["count"] == 100

    at.segmented_control(key="perf_window").set_value("Custom").run()
    now = datetime.now().replace(second=0, microsecond=0)
    at.session_state["perf_from"] = now - timedelta(hours=5)
    at.session_state["perf_to"] = now - timedelta(hours=4)
    at.run()
    assert not at.exception
    assert any("No samples of importer/latency_ms between" in i.value
               and "the newest is from" in i.value for i in at.info)
    at.session_state["perf_to"] = now - timedelta(hours=6)  # before "From"
    at.run()
    assert any("must be before" in w.value for w in at.warning)


# -- error patterns -------------------------------------------------------------------------------


def test_error_patterns_table_filter_and_sort(state_db: StateFixture, dash: Any) -> None:
    patterns = api(state_db.url, lambda s: s.get_error_patterns(time_window_hours=24))
    at = dash(state_db.url, "errors")
    table = frame(at)
    assert len(table) == len(patterns) == 2
    by_type = {p["error_type"]: p for p in patterns}
    for _, row in table.iterrows():
        p = by_type[row["type"]]
        assert row["message"] == p["normalized_message"]
        assert row["count"] == p["frequency"]
        assert row["sources"] == ", ".join(p["source_agents"])
        assert sum(row["trend"]) == p["frequency"]
    assert list(table["type"]) == ["ValueError", "TimeoutError"]  # most frequent first
    assert metrics(at)["Errors in the last 24 h"] == "9"

    at.selectbox(key="err_sort").set_value("type").run()
    assert list(frame(at)["type"]) == ["TimeoutError", "ValueError"]
    at.multiselect(key="err_type").select("TimeoutError").run()
    assert list(frame(at)["type"]) == ["TimeoutError"]
    assert metrics(at)["Patterns shown"] == "1"
    at.multiselect(key="err_type").unselect("TimeoutError").run()
    at.text_input(key="err_text").input("email").run()
    assert list(frame(at)["type"]) == ["ValueError"]
    at.text_input(key="err_text").input("no such message").run()
    assert any("No pattern matches" in i.value for i in at.info)


# -- insights -------------------------------------------------------------------------------------


def _shown(at: AppTest) -> set[str]:
    """Insight ids with a card on the page (each card has a selection checkbox)."""
    return {c.key.removeprefix("sel_") for c in at.checkbox if c.key and c.key.startswith("sel_")
            and c.key != "sel_page"}


def test_insights_counts_filters_and_evidence_on_demand(state_db: StateFixture,
                                                        dash: Any) -> None:
    async def informational(s: SharedState) -> str:
        iid = await s.add_insight("import_completed", {"summary": "a.csv: 3 rows"},
                                  "profile_import", priority="info")
        await s.flush()
        return iid

    info = api(state_db.url, informational)
    everything = api(state_db.url, SharedState.get_insights)
    # open work: an informational insight is listed under "All", never as needing attention
    active = [i for i in everything if i["active"] and i["priority"] != "info"]
    assert info not in {i["insight_id"] for i in active}
    at = dash(state_db.url, "insights")
    assert metrics(at)["Open"] == str(len(active))
    assert metrics(at)["Acknowledged"] == "1"
    assert metrics(at)["New since you last looked"] == str(len(active))  # never looked
    assert _shown(at) == {i["insight_id"] for i in active}  # "Needs attention" by default
    ack_buttons = {b.key for b in at.button if b.key and b.key.startswith("ack_")}
    assert ack_buttons == {f"ack_{i['insight_id']}" for i in active}
    assert list(at.json) == []  # evidence is rendered on demand only
    high = state_db.insight_ids["high"]
    at.toggle(key=f"ev_{high}").set_value(True).run()
    evidence = [json.loads(j.value) for j in at.json]
    assert evidence == [{"summary": "p95 latency up 80 %", "p95_ms": 900}]

    at.segmented_control(key="ins_state").set_value("Acknowledged").run()
    assert _shown(at) == {state_db.insight_ids["medium"]}
    at.segmented_control(key="ins_state").set_value("All").run()
    assert _shown(at) == {i["insight_id"] for i in everything}
    at.multiselect(key="ins_priority").select("critical").run()
    assert _shown(at) == {state_db.insight_ids["critical"]}
    assert any("disk 99 % full" in t.value for t in at.text)
    at.multiselect(key="ins_priority").unselect("critical").run()
    at.text_input(key="ins_search").input("e-mails").run()
    assert _shown(at) == {state_db.insight_ids["medium"]}


def test_acknowledge_resolve_reopen_and_mute_from_the_page(state_db: StateFixture,
                                                           dash: Any) -> None:
    target = state_db.insight_ids["critical"]

    def row() -> dict[str, Any]:
        [found] = [i for i in api(state_db.url, SharedState.get_insights)
                   if i["insight_id"] == target]
        return found

    at = dash(state_db.url, "insights")
    open_before = int(metrics(at)["Open"])
    at.button(key=f"ack_{target}").click().run()
    assert not at.exception
    assert row()["status"] == "acknowledged" and row()["by"].startswith("dashboard:")
    assert metrics(at)["Open"] == str(open_before - 1)
    assert target not in _shown(at)  # no longer needs attention
    assert any(s.value.startswith("Acknowledged 1 insight") for s in at.success)
    at.segmented_control(key="ins_state").set_value("All").run()
    at.button(key=f"resolve_{target}").click().run()
    assert row()["status"] == "resolved"
    at.button(key=f"reopen_{target}").click().run()
    assert row()["status"] == "open"
    at.button(key=f"mute_3600_{target}").click().run()
    assert row()["state"] == "muted"
    assert metrics(at)["Muted"] == "1"
    at.button(key=f"unmute_{target}").click().run()
    assert row()["state"] == "open"
    assert [h["action"] for h in row()["history"]] == [
        "acknowledge", "resolve", "reopen", "mute", "unmute"]
    at.toggle(key=f"ev_{target}").set_value(True).run()
    history = frame(at)
    assert list(history["change"]) == ["unmute", "mute", "reopen", "resolve", "acknowledge"]


def test_bulk_actions_paging_and_new_since_last_looked(page_db_url: str, dash: Any) -> None:
    async def many(shared: SharedState) -> list[str]:
        return [await shared.add_insight("error_rate_spike", {"key": f"k{n}",
                                                              "summary": f"spike {n}"},
                                         "coordinator", priority="high") for n in range(45)]

    ids = api(page_db_url, many)
    at = dash(page_db_url, "insights")
    assert metrics(at)["Open"] == "45"
    assert len(_shown(at)) == 20  # a page
    first_page = _shown(at)
    at.number_input(key="ins_page").set_value(3).run()
    assert len(_shown(at)) == 5 and not (_shown(at) & first_page)
    at.number_input(key="ins_page").set_value(1).run()
    at.button(key="sel_page").click().run()
    at.button(key="bulk_acknowledge").click().run()
    assert metrics(at)["Open"] == "25"
    acked = {i["insight_id"] for i in
             api(page_db_url, lambda s: s.get_insights(status="acknowledged"))}
    assert acked == first_page
    at.button(key="ins_seen").click().run()
    assert metrics(at)["New since you last looked"] == "0"

    n = ids.index(sorted(first_page)[0])

    async def again(shared: SharedState) -> None:  # one of the acknowledged fires again
        await shared.add_insight("error_rate_spike", {"key": f"k{n}", "summary": f"spike {n}"},
                                 "coordinator", priority="high")

    api(page_db_url, again)
    rerun(at)
    assert metrics(at)["Regressed"] == "1"
    assert metrics(at)["Open"] == "26"
    assert metrics(at)["New since you last looked"] == "1"
    at.selectbox(key="mute_type_pick").set_value("error_rate_spike").run()
    at.button(key="mute_type_go").click().run()
    assert metrics(at)["Open"] == "0" and metrics(at)["Muted"] == "45"
    at.button(key="unmute_type_error_rate_spike").click().run()
    assert metrics(at)["Open"] == "26"


# -- optimizations --------------------------------------------------------------------------------


def test_optimizations_history_and_request(state_db: StateFixture, dash: Any) -> None:
    records = api(state_db.url, lambda s: s.get_recent_optimizations(hours=168))
    at = dash(state_db.url, "optimizations")
    shown = metrics(at)
    assert shown["Changes"] == str(len(records))
    assert shown["Kept"] == str(sum(r["outcome"] == "kept" for r in records)) == "1"
    assert shown["Rolled back"] == "1"
    table = frame(at).set_index("type")
    assert table.loc["tune_batch_size", "before"] == json.dumps({"batch_size": 500})
    assert table.loc["tune_batch_size", "after"] == json.dumps({"batch_size": 1000})
    assert table.loc["tune_page_size", "result"] == "rolled back"
    assert not any("is requested" in i.value for i in at.info)

    at.button(key="request_opt").click().run()
    values = api(state_db.url, SharedState.get_system_state)["values"]
    assert values["optimization_requested"] is True
    assert any("is requested" in i.value for i in at.info)


# -- configuration --------------------------------------------------------------------------------


def save(at: AppTest, key: str, value: str) -> AppTest:
    at.selectbox(key="cfg_key").set_value(key).run()
    at.text_input(key="cfg_value").input(value).run()
    at.button(key="cfg_save").click().run()
    assert not at.exception
    return at


@pytest.mark.parametrize(("key", "value", "message"), [
    ("retention.minute_buckets", "-5", "retention.minute_buckets: Input should be greater"),
    ("ticker.interval_s", "fast", "ticker.interval_s: Input should be a valid number"),
    ("optimizer.enabled", "\"maybe\"", "optimizer.enabled: Input should be a valid boolean"),
])
def test_config_editor_refuses_bad_values_and_writes_nothing(
        state_db: StateFixture, dash: Any, key: str, value: str, message: str) -> None:
    before = api(state_db.url, SharedState.export_state)
    at = save(dash(state_db.url, "configuration"), key, value)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Refused, nothing was written: "), errors
    assert message in errors[0]
    assert not at.success
    assert api(state_db.url, SharedState.export_state) == before


def test_config_editor_refuses_a_secret_under_a_new_key(state_db: StateFixture,
                                                        dash: Any) -> None:
    before = api(state_db.url, SharedState.export_state)
    at = dash(state_db.url, "configuration")
    at.selectbox(key="cfg_key").set_value("(another key…)").run()
    at.text_input(key="cfg_new_key").input("agents.importer.options.api_key").run()
    at.text_input(key="cfg_value").input("\"sk-live-123\"").run()
    at.button(key="cfg_save").click().run()
    assert any("secrets never go into shared state" in e.value for e in at.error)
    assert api(state_db.url, SharedState.export_state) == before


def test_config_editor_saves_a_good_value(state_db: StateFixture, dash: Any) -> None:
    at = save(dash(state_db.url, "configuration"), "retention.minute_buckets", "240")
    assert not at.error
    assert api(state_db.url, SharedState.export_state)["config"]["retention"][
        "minute_buckets"] == 240
    shown = [json.loads(j.value) for j in at.json]
    assert any(s.get("minute_buckets") == 240 for s in shown)  # what is in force after saving


# -- time travel and export -----------------------------------------------------------------------


def test_time_travel_shows_the_state_as_of_an_older_checkpoint(state_db: StateFixture,
                                                               dash: Any) -> None:
    latest = api(state_db.url, SharedState.get_system_state)
    first = state_db.first_checkpoint_summary
    at = dash(state_db.url, "time_travel")
    options = at.selectbox(key="tt_checkpoint").options
    assert len(options) == 2  # the tick's checkpoint and the flush's
    assert not metrics(at)  # nothing loaded until a checkpoint is picked
    at.selectbox(key="tt_checkpoint").select_index(0).run()  # newest first
    high = latest["insights"]["open_by_priority"]["high"]
    assert metrics(at)["Open high"] == str(high)
    at.selectbox(key="tt_checkpoint").select_index(1).run()
    assert not at.exception
    assert metrics(at)["Open high"] == str(first["insights"]["open_by_priority"]["high"])
    assert int(metrics(at)["Open high"]) == high - 1  # before the late insight
    assert metrics(at)["Agents"] == str(first["agents"]["registered"])
    at.toggle(key="tt_all").set_value(True).run()
    assert len(at.selectbox(key="tt_checkpoint").options) == 2
    assert json.loads(data.export_json(data.load_uncached(url=state_db.url))) != \
        json.loads(data.export_json(data.load_uncached(options_id(at), state_db.url)))


def options_id(at: AppTest) -> str:
    """The checkpoint id of the time-travel page's current choice."""
    return at.selectbox(key="tt_checkpoint").value


def test_export_page_matches_the_api_export(state_db: StateFixture, dash: Any) -> None:
    exported = api(state_db.url, SharedState.export_state)
    at = dash(state_db.url, "export")
    assert [b.label for b in at.get("download_button")] == ["Download state JSON"]
    table = frame(at).set_index("channel")
    for channel, value in exported["channels"].items():
        assert table.loc[channel, "entries"] == len(value)
    assert json.loads(data.export_json(data.load_uncached(url=state_db.url))) == exported


def test_agents_page_shows_every_process_of_every_host(db_url: str, dash: Any) -> None:
    """Workers on two other hosts report as ``bga worker`` does (their heartbeats name the
    process); this process leads a tick. The page lists all three, whatever the backend."""

    async def build(shared: SharedState) -> None:
        for agent_id, host, pid in (("importer", "host-a", 101), ("bridge", "host-b", 202),
                                    ("mirror", "host-b", 202)):
            await shared.register_agent(agent_id, kind="echo", interval_s=60)
            await shared.receive_heartbeat(agent_id, {
                "status": "ok", "step_ms": 1.5, "tick": None, "worker": f"{host}:{pid}",
                "host": host, "pid": pid})
        await runner.tick(shared, wait=30, coordinator_only=True)

    api(db_url, build)
    expected = {p["process"]: p for p in api(db_url, SharedState.get_processes)}
    me = f"{socket.gethostname()}:{os.getpid()}"
    assert set(expected) == {"host-a:101", "host-b:202", me}
    at = dash(db_url, "agents")
    (shown,) = [f.value for f in at.dataframe if "process" in f.value.columns]
    table = shown.set_index("process")
    assert set(table.index) == set(expected)
    assert table.loc["host-a:101", "agents"] == "importer"
    assert table.loc["host-b:202", "agents"] == "bridge, mirror"
    assert table.loc["host-b:202", "host"] == "host-b"
    assert table.loc[me, "role"] == "coordinator (leader), coordinator-only"
    agents = frame(at).set_index("agent")
    assert agents.loc["mirror", "runs on"] == "worker host-b:202"


# -- a database the dashboard cannot read ---------------------------------------------------------


@pytest.mark.parametrize("page", ["overview", "agents", "performance", "errors", "insights",
                                  "optimizations", "configuration", "time_travel", "export"])
def test_a_mistyped_sqlite_path_is_a_message_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str) -> None:
    missing = tmp_path / "no-such-dir" / "stat.db"
    monkeypatch.setenv("BGA_DATABASE_URL", f"sqlite:///{missing}")
    data.refresh()
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Cannot open the state database"), errors
    assert f"no state database at {missing}" in errors[0]
    assert not missing.exists() and not missing.parent.exists()


def test_an_unreachable_server_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BGA_DATABASE_URL", f"postgresql://postgres:s3cret@127.0.0.1:{port}/x")
    data.refresh()
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    [error] = [e.value for e in at.error]
    assert error.startswith("Cannot open the state database postgresql://postgres:***@")
    assert "cannot connect to PostgreSQL" in error
    assert "s3cret" not in error
