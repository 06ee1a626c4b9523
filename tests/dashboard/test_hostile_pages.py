"""The dashboard refuses hostile pages (issue 15), in a real browser and on the raw wire.

- a request or websocket handshake whose Host (DNS rebinding) or Origin (another site's page)
  is not an allowed name gets 403 naming the rule, never 101: such a page can neither read the
  state nor edit config;
- a hostile insight (markdown image, phishing link, a backtick in its source) renders inert:
  no <img>, no link, and no request leaves the browser for another host.
"""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from state import PerformanceMetric, SharedState
from tests.dashboard.conftest import (
    WAIT_MS,
    Processes,
    api,
    free_port,
    launch_chromium,
    open_page,
    require_browser,
    wait_healthy,
)

pytestmark = pytest.mark.slow

EVIL = "evil.example"


def handshake(port: int, host: str, origin: str) -> str:
    """Status line of a raw websocket upgrade of Streamlit's stream."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Origin: {origin}\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        reply = b""
        while b"\r\n" not in reply:
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0].decode(errors="replace")


def http_status(port: int, host: str, origin: str | None = None) -> tuple[int, bool]:
    """Status of ``GET /`` with this Host (and Origin); whether the body names the rule."""
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n" + \
        (f"Origin: {origin}\r\n" if origin else "") + "Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request.encode())
        reply = b""
        while chunk := s.recv(65_536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    return status, b"refused by rule 'dashboard-hosts'" in reply


async def write_hostile(shared: SharedState) -> str:
    await shared.register_agent("probe", kind="probe", interval_s=3600)
    await shared.add_performance_metrics(  # a series name shown on Agents and Performance
        PerformanceMetric(source_agent="probe", name=f"![m](http://{EVIL}/m.png) lat",
                          value=1.0) for _ in range(3))
    return await shared.add_insight(
        f"phish www.{EVIL} http://{EVIL}/t", {"summary": f"![pixel](http://{EVIL}/pixel.png) "
                             f"[Reset your password](http://{EVIL}/login) www.{EVIL}/x "
                             f"<img src='http://{EVIL}/i.png'> :red[alarm] `tick` done"},
        "evil`agent", priority="critical")


def test_foreign_host_or_origin_is_refused_and_hostile_insight_is_inert(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_api = require_browser()
    expect = sync_api.expect
    expect.set_options(timeout=WAIT_MS)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    port = free_port()
    monkeypatch.setenv("BGA_DASHBOARD_HOSTS", "dash.internal")
    procs = Processes(tmp_path)
    try:
        procs.start("dashboard", "dashboard", "--db", url, "--port", str(port))
        wait_healthy(procs, port)
        insight_id = api(url, write_hostile, producer="browser-test")

        # the raw wire: DNS rebinding (foreign Host) and a cross-site page (foreign Origin),
        # for plain HTTP (the front) and for Streamlit's websocket
        assert http_status(port, f"{EVIL}:{port}") == (403, True)
        assert http_status(port, "127.0.0.1", origin=f"http://{EVIL}") == (403, True)
        assert http_status(port, f"localhost:{port}")[0] == 200
        assert handshake(port, f"{EVIL}:{port}", f"http://{EVIL}:{port}").endswith("403 Forbidden")
        assert handshake(port, f"127.0.0.1:{port}", f"http://{EVIL}:{port}") \
            .endswith("403 Forbidden")
        for name in ("127.0.0.1", "localhost", "dash.internal"):
            assert handshake(port, f"{name}:{port}", f"http://{name}:{port}") \
                .endswith("101 Switching Protocols"), name

        with sync_api.sync_playwright() as pw:
            browser = launch_chromium(pw, f"--host-resolver-rules=MAP {EVIL} 127.0.0.1")
            try:
                page = open_page(browser)
                foreign: list[str] = []

                def guard(route: object) -> None:
                    request = route.request  # type: ignore[attr-defined]
                    host = request.url.split("/")[2].split(":")[0]
                    if host != "127.0.0.1":
                        foreign.append(request.url)
                        route.abort()  # type: ignore[attr-defined]
                    else:
                        route.continue_()  # type: ignore[attr-defined]

                page.route("**/*", guard)
                page.goto(f"http://127.0.0.1:{port}/insights")
                box = page.locator(f".st-key-insight_{insight_id}")
                expect(box).to_contain_text("Reset your password")  # shown, as text
                expect(box).to_contain_text("evil`agent")  # the backtick stays a character
                expect(box).to_contain_text("![pixel](http:")  # as typed, not an image
                expect(box).to_contain_text("evil.example/pixel.png) [Reset your password](")
                assert box.locator("img").count() == 0
                hrefs = [a.get_attribute("href") or "" for a in box.locator("a").all()]
                assert not [h for h in hrefs if EVIL in h or h.startswith(("http", "//"))], \
                    hrefs  # no clickable link out of the page
                codes = [c.text_content() for c in box.locator("code").all()]
                assert set(codes) <= {insight_id}, codes  # no code span of the user's text
                assert foreign == []  # not one request to another host
                for path in ("agents", "performance"):
                    page.goto(f"http://127.0.0.1:{port}/{path}")
                    expect(page.get_by_text("evil.example/m.png) lat").first).to_be_attached()
                    assert page.locator(f"img[src*='{EVIL}']").count() == 0, path
                assert foreign == []
                page.unroute("**/*")

                # the same dashboard reached under a rebinding name: refused, page and all
                rebound = browser.new_page()
                reply = rebound.goto(f"http://{EVIL}:{port}/insights")
                assert reply is not None and reply.status == 403
                assert "refused by rule 'dashboard-hosts'" in rebound.content()
                assert rebound.locator(f".st-key-insight_{insight_id}").count() == 0
            finally:
                browser.close()
    finally:
        procs.stop()
