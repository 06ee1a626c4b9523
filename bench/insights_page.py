"""Insights page render time with 500 insights (the cap), next to the page it replaced.

Writes 500 insights (a quarter acknowledged, some resolved, some muted, evidence of a few KB
each) through the SharedState API, then measures with Streamlit's AppTest:

  - loading the state (the floor every page pays; caches cleared)
  - the Insights page, cold (load included) and warm (state cached: the page's own cost), on
    its default view ("Needs attention") and on "All"
  - the peer: the previous Insights page (``git show PEER_COMMIT:dashboard/views/insights.py``,
    the page before the lifecycle: every shown card, up to 100, with its JSON evidence in an
    expander), cold and warm
  - in headless Chromium (``/usr/bin/chromium``), both pages served by ``streamlit run``: time
    from navigation until every card of the first view is on screen (what a person waits for;
    AppTest does not include the browser's work)

    .venv/bin/python bench/insights_page.py [--insights 500] [--repeat 5] [--no-browser]
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from _common import machine, parser, print_table, sqlite_url, temp_dir, verdict

from dashboard import data
from state import SharedState

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "dashboard" / "views" / "insights.py"
TARGET_MS = 1000.0
PEER_COMMIT = "e7d7881"  # the last commit with the Insights page before the lifecycle


async def build(url: str, n: int, rng: random.Random) -> None:
    async with SharedState.open(url, producer="bench-insights") as shared:
        ids = await asyncio.gather(*(shared.add_insight(
            ("latency_regression", "error_rate_spike", "source_quiet")[k % 3],
            {"key": f"k{k}", "summary": f"series {k} is slower than before",
             "evidence": [{"run": f"r{k}-{j}", "ms": round(rng.lognormvariate(5, 1), 1)}
                          for j in range(40)]},
            "coordinator", priority=("low", "medium", "high", "critical")[k % 4])
            for k in range(n)))
        await shared.update_insights(ids[: n // 4], "acknowledge")
        await shared.update_insights(ids[n // 4: n // 3], "resolve")
        await shared.update_insights(ids[n // 3: n // 3 + 20], "mute", duration_s=3600)
        await shared.flush()


def page_runner(path: Path, state: str | None) -> Callable[[], None]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(path), default_timeout=120)
    at.run()
    if state is not None:
        at.segmented_control(key="ins_state").set_value(state).run()

    def run() -> None:
        at.run()
        if at.exception:
            raise RuntimeError([e.value for e in at.exception])

    return run


def timed(fn: Callable[[], Any], repeat: int, before: Callable[[], None]) -> list[float]:
    out = []
    for _ in range(repeat):
        before()
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--insights", type=int, default=500)
    p.add_argument("--repeat", type=int, default=5, help="runs per figure (median, max)")
    p.add_argument("--no-browser", action="store_true", help="skip the Chromium figures")
    args = p.parse_args()
    rng = random.Random(args.seed)
    rows: list[list[Any]] = []
    with temp_dir(args.dir) as tmp:
        url = sqlite_url(tmp / "insights.db")
        asyncio.run(build(url, args.insights, rng))
        old = ROOT / "dashboard" / "views" / "_bench_previous_insights.py"
        old.write_text(subprocess.run(["git", "show", f"{PEER_COMMIT}:dashboard/views/insights.py"],
                                      cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout)
        try:
            with mock.patch.dict(os.environ, {"BGA_DATABASE_URL": url}):
                rows.append(["load the state (floor)", *_fig(timed(
                    lambda: data.load_uncached(url=url), args.repeat, data.refresh))])
                for label, path, state in (
                        ("this page, Needs attention", PAGE, None),
                        ("this page, All", PAGE, "All"),
                        ("previous page (peer), All", old, None)):
                    run = page_runner(path, state)
                    rows.append([f"{label}: cold", *_fig(timed(run, args.repeat,
                                                               data.refresh))])
                    rows.append([f"{label}: warm", *_fig(timed(run, args.repeat,
                                                               lambda: None))])
            if not args.no_browser and Path(CHROMIUM).exists():
                for label, path, cards in (("this page in Chromium, first view", PAGE, 20),
                                           ("previous page in Chromium (peer)", old, 100)):
                    rows.append([label, *_fig(browser_times(url, path, cards, args.repeat))])
        finally:
            old.unlink()
    print_table(f"Insights page with {args.insights} insights (ms)",
                ["what", "median ms", "max ms", f"< {TARGET_MS:.0f} ms"],
                [[*r, verdict(r[1], TARGET_MS, higher_is_better=False)] for r in rows],
                plain=args.plain,
                notes=[machine(), f"{args.repeat} runs each; cold: caches cleared (load "
                                  "included); warm: the page's own render"])


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def browser_times(url: str, script: Path, cards: int, repeat: int) -> list[float]:
    """Navigation -> ``cards`` insight cards visible, in headless Chromium, per fresh page."""
    import sys
    import urllib.request

    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "BGA_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.headless", "true"], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("streamlit did not start") from None
                time.sleep(0.2)
        out = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for i in range(repeat + 1):  # the first run warms the server: not counted
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    t0 = time.perf_counter()
                    page.goto(f"http://127.0.0.1:{port}/")
                    page.locator("[class*='st-key-insight_']").nth(cards - 1).wait_for(
                        state="attached", timeout=120_000)
                    if i:
                        out.append((time.perf_counter() - t0) * 1000)
                    page.close()
            finally:
                browser.close()
        return out
    finally:
        server.terminate()
        server.wait(timeout=30)


def _fig(ms: list[float]) -> list[float]:
    return [statistics.median(ms), max(ms)]


if __name__ == "__main__":
    main()
