"""The insight lifecycle in a real browser: acknowledge on the Insights page, the insight fires
again and comes back as regressed on its own, resolve, reopen; every step recorded."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import pytest

from state import SharedState
from tests.dashboard.conftest import api
from tests.dashboard.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    WAIT_MS,
    Processes,
    free_port,
    processes,  # noqa: F401  (fixture)
    require_browser,
    wait_healthy,
)

pytestmark = pytest.mark.slow


async def fire(shared: SharedState) -> str:
    return await shared.add_insight("queue_stuck", {"key": "orders",
                                                    "summary": "probe: orders queue stuck"},
                                    "probe_agent", priority="critical")


def _history(url: str, insight_id: str) -> list[dict]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's loop runs here
        rows = pool.submit(api, url, SharedState.get_insights).result()
    return next(i["history"] for i in rows if i["insight_id"] == insight_id)


def test_acknowledge_regress_resolve_reopen_in_chromium(
        tmp_path: Path, processes: Processes,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
    processes.start("ticker", "run", "--db", url, "--interval", "1")
    monkeypatch.setenv("BGA_DASHBOARD_ANONYMOUS", "operator")  # no login here (test_login.py)
    processes.start("dashboard", "dashboard", "--db", url, "--port", str(port))
    wait_healthy(processes, port)
    insight_id = api(url, fire, producer="probe")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(f"http://127.0.0.1:{port}/insights")
            box = page.locator(f".st-key-insight_{insight_id}")
            expect(box).to_contain_text("probe: orders queue stuck")
            expect(box).to_contain_text("open since")

            box.get_by_role("button", name="Acknowledge", exact=True).click()
            expect(box).to_have_count(0)  # out of "Needs attention"
            page.get_by_role("radio", name="Acknowledged", exact=True).click()
            expect(box).to_contain_text("acknowledged")
            expect(box).to_contain_text("by dashboard:")

            # it fires again (written from another thread: Playwright's loop runs in this one)
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(api, url, fire, producer="probe").result()
            page.get_by_role("radio", name="Needs attention", exact=True).click()
            expect(box).to_contain_text("regressed")  # back on its own (live refresh)
            expect(box).to_contain_text("fired again after it was closed")
            page.screenshot(path=str(tmp_path / "insights-regressed.png"), full_page=True)
            # the page reads the regression at once; its history entry is written by the next
            # fold: wait for it (bounded), so the resolve below comes after it
            deadline = time.monotonic() + WAIT_MS / 1000
            while not any(h["action"] == "regressed" for h in _history(url, insight_id)):
                assert time.monotonic() < deadline, "the regression was never recorded"
                time.sleep(0.2)

            box.get_by_role("button", name="Resolve", exact=True).click()
            expect(box).to_have_count(0)
            page.get_by_role("radio", name="Resolved", exact=True).click()
            expect(box).to_contain_text("resolved")
            box.get_by_role("button", name="Reopen", exact=True).click()
            page.get_by_role("radio", name="Needs attention", exact=True).click()
            expect(box).to_contain_text("open since")
            box.get_by_text("Evidence and history").click()
            expect(box).to_contain_text("orders")  # the evidence, rendered on demand
            page.screenshot(path=str(tmp_path / "insights-history.png"), full_page=True)
        finally:
            browser.close()

    [row] = [i for i in api(url, SharedState.get_insights) if i["insight_id"] == insight_id]
    assert row["status"] == "open"
    actions = [(h["action"], h["by"].split(":")[0]) for h in row["history"]]
    assert actions == [("acknowledge", "dashboard"), ("regressed", "probe_agent"),
                       ("resolve", "dashboard"), ("reopen", "dashboard")]
    assert (tmp_path / "insights-regressed.png").stat().st_size > 10_000
