"""The dashboard login and the role gate: users from a file (never the state), viewers read,
operators write, a wrong password gets nothing, and every write says who made it.

Three levels: the users file and the gate as functions; every page under Streamlit's AppTest
(a stale control clicked after a demotion meets the gate on the server); and a real browser
(headless Chromium) against `bga dashboard`, including a widget event replayed from an
operator's session into a viewer's websocket.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from dashboard import auth, data
from graph.cli import app
from state import SharedState
from tests.dashboard.conftest import StateFixture, api

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
# cheap argon2 parameters for the test users (verify reads them off each hash)
_cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORDS = {"vera": "vera-reads-only", "olga": "olga-operates"}


def users_text(roles: dict[str, str]) -> str:
    return "# test users\n" + "".join(
        f"{name}:{role}:{_cheap.hash(PASSWORDS[name])}\n" for name, role in roles.items())


@pytest.fixture
def users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A users file with a viewer (vera) and an operator (olga), in force for this test."""
    path = tmp_path / "users.txt"
    path.write_text(users_text({"vera": "viewer", "olga": "operator"}))
    monkeypatch.setenv("BGA_DASHBOARD_USERS", str(path))
    monkeypatch.delenv("BGA_DASHBOARD_ANONYMOUS", raising=False)
    return path


def system_values(url: str) -> dict[str, Any]:
    return api(url, SharedState.get_system_state)["values"]


# -- the users file and the gate ------------------------------------------------------------------


@pytest.mark.parametrize(("line", "reason"), [
    ("alice", "line 2: expected name:role:hash"),
    ("alice:admin:$argon2id$x", "line 2: role must be viewer or operator"),
    ("alice:viewer:hunter2", "line 2: the hash is not an argon2 hash"),
    ("al ice:viewer:$argon2id$x", "line 2: bad user name"),
    ("vera:operator:$argon2id$x", "line 2: user 'vera' appears twice"),
])
def test_a_bad_users_line_is_named(line: str, reason: str) -> None:
    with pytest.raises(auth.AuthConfigError, match=reason):
        auth.parse_users(f"vera:viewer:$argon2id$y\n{line}\n", "users.txt")


def test_verify_takes_the_right_password_only() -> None:
    users = auth.parse_users(users_text({"vera": "viewer", "olga": "operator"}))
    assert auth.verify(users, "olga", PASSWORDS["olga"]) == users["olga"]
    assert auth.verify(users, "olga", PASSWORDS["vera"]) is None  # another user's password
    assert auth.verify(users, "olga", "") is None
    assert auth.verify(users, "nobody", PASSWORDS["olga"]) is None
    assert "olga-operates" not in repr(users["olga"])  # the hash stays out of reprs too


def test_default_roles_with_and_without_users(users: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert auth.settings().anonymous == "none"  # users configured: log in to see anything
    monkeypatch.delenv("BGA_DASHBOARD_USERS")
    assert auth.settings().anonymous == "viewer"  # none configured: read-only for everyone
    monkeypatch.setenv("BGA_DASHBOARD_ANONYMOUS", "root")
    with pytest.raises(auth.AuthConfigError, match="none, viewer or operator"):
        auth.settings()
    monkeypatch.setenv("BGA_DASHBOARD_USERS", str(users.parent / "missing.txt"))
    monkeypatch.setenv("BGA_DASHBOARD_ANONYMOUS", "viewer")
    with pytest.raises(auth.AuthConfigError, match="cannot read the users file"):
        auth.settings()


def test_a_direct_call_without_a_session_writes_nothing(
        state_db: StateFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate is in the writing code: called from outside a dashboard session (no login),
    every write is refused and the state does not change; allowed once visitors may operate."""
    monkeypatch.setenv("BGA_DATABASE_URL", state_db.url)
    monkeypatch.delenv("BGA_DASHBOARD_USERS", raising=False)
    monkeypatch.delenv("BGA_DASHBOARD_ANONYMOUS", raising=False)
    target = state_db.insight_ids["high"]
    before = api(state_db.url, SharedState.export_state)
    for write in (lambda: data.update_config({"ticker.interval_s": 7}),
                  lambda: data.request_optimization(),
                  lambda: data.update_insights([target], "acknowledge"),
                  lambda: data.mark_acted_upon(target),
                  lambda: data.mute_insight_type("latency_regression", 60.0)):
        with pytest.raises(auth.Forbidden, match="needs the operator role"):
            write()
    assert api(state_db.url, SharedState.export_state) == before
    monkeypatch.setenv("BGA_DASHBOARD_ANONYMOUS", "operator")
    data.update_config({"ticker.interval_s": 7})
    assert system_values(state_db.url)["config_change"]["by"] == "dashboard"


def test_hash_password_prints_a_users_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["hash-password", "olga", "--role", "operator", "--stdin"],
                                input="s3cret pass\n")
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert "s3cret" not in line
    users = auth.parse_users(line)
    assert users["olga"].role == "operator"
    assert auth.verify(users, "olga", "s3cret pass") is not None
    bad = CliRunner().invoke(app, ["hash-password", "olga", "--role", "admin", "--stdin"],
                             input="x\n")
    assert bad.exit_code == 2 and "unknown role" in bad.output


# -- every page under AppTest ---------------------------------------------------------------------


def open_app(url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("BGA_DATABASE_URL", url)
    data.refresh()
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def log_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="login_user").input(name)
    at.text_input(key="login_password").input(password)
    [submit] = [b for b in at.button if b.label == "Log in"]
    submit.click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    parts = [str(getattr(e, "value", "")) for e in (*at.markdown, *at.caption, *at.text,
                                                     *at.metric, *at.title, *at.error)]
    return "\n".join(parts)


def test_a_wrong_password_gets_nothing(state_db: StateFixture, users: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    at = open_app(state_db.url, monkeypatch)
    assert "Log in to see the dashboard" in page_text(at)
    for name, password in (("olga", "wrong"), ("olga", PASSWORDS["vera"]), ("nobody", "x")):
        log_in(at, name, password)
        assert [e.value for e in at.error] == [auth.LOGIN_FAILED]
        assert not at.metric and not at.dataframe  # no number of the state
        assert "Health" not in page_text(at) and "Signed in" not in page_text(at)
    log_in(at, "olga", PASSWORDS["olga"])
    assert "Signed in as **olga** (operator)" in page_text(at)


def test_a_viewer_sees_every_page_but_no_write_control(
        state_db: StateFixture, users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = log_in(open_app(state_db.url, monkeypatch), "vera", PASSWORDS["vera"])
    assert "Signed in as **vera** (viewer)" in page_text(at)
    writes = ("cfg_save", "request_opt", "bulk_acknowledge", "mute_type_go",
              *(f"ack_{i}" for i in state_db.insight_ids.values()))
    for page in ("configuration", "optimizations", "insights", "overview"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        keys = {b.key for b in at.button}
        assert not keys & set(writes), (page, keys & set(writes))
    at.switch_page("views/configuration.py").run()
    assert "Read-only: changing the configuration needs the operator role." in page_text(at)
    at.switch_page("views/insights.py").run()
    assert at.metric  # the viewer sees the counts ...
    at.button(key="ins_seen").click().run()  # ... and keeps their own "last looked" mark
    assert not at.exception

    async def new_for(shared: SharedState) -> tuple[int, int]:
        mine = await shared.get_insight_counts(viewer="dashboard:vera")
        shared_mark = await shared.get_insight_counts(viewer="dashboard")
        return mine["new"], shared_mark["new"]

    mine, anonymous = api(state_db.url, new_for)
    assert mine == 0 and anonymous > 0  # her own mark; the anonymous one untouched


def test_an_operator_writes_and_is_recorded(state_db: StateFixture, users: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    at = log_in(open_app(state_db.url, monkeypatch), "olga", PASSWORDS["olga"])
    at.switch_page("views/configuration.py").run()
    at.selectbox(key="cfg_key").set_value("ticker.interval_s").run()
    at.text_input(key="cfg_value").input("45").run()
    at.button(key="cfg_save").click().run()
    assert any("Saved ticker.interval_s" in s.value for s in at.success)
    change = system_values(state_db.url)["config_change"]
    assert change["by"] == "dashboard:olga" and change["keys"] == ["ticker.interval_s"]
    assert "by dashboard:olga" in page_text(at)

    at.switch_page("views/optimizations.py").run()
    at.button(key="request_opt").click().run()
    values = system_values(state_db.url)
    assert values["optimization_requested"] is True
    assert values["optimization_request"]["by"] == "dashboard:olga"

    target = state_db.insight_ids["critical"]
    at.switch_page("views/insights.py").run()
    at.button(key=f"ack_{target}").click().run()
    [row] = [i for i in api(state_db.url, SharedState.get_insights) if i["insight_id"] == target]
    assert row["status"] == "acknowledged"
    assert row["history"][-1]["by"] == "dashboard:olga"


def test_a_stale_control_after_a_demotion_is_refused(
        state_db: StateFixture, users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Olga's page still shows the operator controls when she is made a viewer: the click
    reaches the server (the widget was registered on her last run), and the gate in the
    writing code refuses it."""
    at = log_in(open_app(state_db.url, monkeypatch), "olga", PASSWORDS["olga"])
    at.switch_page("views/optimizations.py").run()
    users.write_text(users_text({"vera": "viewer", "olga": "viewer"}))
    before = api(state_db.url, SharedState.export_state)
    at.button(key="request_opt").click().run()
    assert any("needs the operator role" in e.value for e in at.error), page_text(at)
    assert "request_opt" not in {b.key for b in at.button}  # gone once redrawn
    assert api(state_db.url, SharedState.export_state) == before
    assert "Signed in as **olga** (viewer)" in page_text(at)
    users.write_text(users_text({"vera": "viewer"}))  # removed: logged out at once
    at.run()
    assert "Log in to see the dashboard" in page_text(at)
    assert not at.metric


def test_a_broken_users_file_shows_nothing(state_db: StateFixture, users: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    users.write_text("olga:operator:plain-password\n")
    at = open_app(state_db.url, monkeypatch)
    assert [e.value for e in at.error] == [
        f"The dashboard login is misconfigured: {users} line 1: the hash is not an argon2 "
        "hash (make one with `bga hash-password`; never a plain password)"]
    assert not at.metric and not at.text_input


# -- a real browser against `bga dashboard` -------------------------------------------------------


def _finished(received: list[Any]) -> int:
    """Script runs the server reported finished on one websocket."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    n = 0
    for raw in list(received):
        if isinstance(raw, bytes):
            msg = ForwardMsg()
            try:
                msg.ParseFromString(raw)
            except Exception:  # not a ForwardMsg: not a finished run
                continue
            n += msg.WhichOneof("type") == "script_finished"
    return n


class Tap:
    """A page's Streamlit websocket, relayed by Playwright: what the browser sent, what the
    server answered, and a way to send the server bytes of our own."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.received: list[Any] = []
        self.server: Any = None
        self.held: list[Any] | None = None  # the browser's own messages, while injecting

    def __call__(self, ws: Any) -> None:
        self.server = ws.connect_to_server()
        ws.on_message(self._from_browser)
        self.server.on_message(lambda m: (self.received.append(m), ws.send(m)))

    def _from_browser(self, message: Any) -> None:
        self.sent.append(message)
        if self.held is not None:
            self.held.append(message)
        else:
            self.server.send(message)

    def inject(self, page: Any, messages: list[bytes]) -> None:
        """Send ``messages`` as if the browser had, and wait (bounded) until the server
        finished the script run they asked for. The browser's own messages (the pages'
        timed refreshes) are held back meanwhile, so the run that finishes is ours."""
        self.held = []
        try:
            before = _finished(self.received)
            for m in messages:
                self.server.send(m)
            deadline = time.monotonic() + WAIT_S
            while _finished(self.received) <= before:
                assert time.monotonic() < deadline, "the server never ran the injected event"
                page.wait_for_timeout(100)  # Playwright delivers the relay's messages meanwhile
        finally:
            held, self.held = self.held, None
            for m in held:
                self.server.send(m)


WAIT_S = 45.0
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@pytest.mark.slow
def test_login_roles_and_a_forged_event_in_chromium(tmp_path: Path) -> None:
    from tests.dashboard.conftest import (
        CHROMIUM,
        CHROMIUM_ARGS,
        WAIT_MS,
        Processes,
        free_port,
        require_browser,
        wait_healthy,
        write_state,
    )

    sync_api = require_browser()
    sync_api.expect.set_options(timeout=WAIT_MS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    api(url, write_state)
    users = tmp_path / "users.txt"
    users.write_text(users_text({"vera": "viewer", "olga": "operator"}))
    port = free_port()
    procs = Processes(tmp_path)
    # the users file reaches `bga dashboard` through its environment, as in production
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BGA_DASHBOARD_USERS", str(users))
        procs.start("dashboard", "dashboard", "--db", url, "--port", str(port))
    try:
        wait_healthy(procs, port)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                _browser_checks(browser, sync_api.expect, port, url)
            finally:
                browser.close()
    finally:
        procs.stop()


def _log_in(page: Any, port: int, name: str, password: str, path: str = "") -> None:
    page.goto(f"http://127.0.0.1:{port}/{path}")
    page.get_by_label("User", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


def _values(url: str) -> dict[str, Any]:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's loop runs here
        return pool.submit(system_values, url).result()


def _browser_checks(browser: Any, expect: Any, port: int, url: str) -> None:
    viewport = {"width": 1400, "height": 1000}
    # a wrong password: the form again and an error, no page of the state
    page = browser.new_page(viewport=viewport)
    _log_in(page, port, "olga", "not her password", "configuration")
    expect(page.get_by_text(auth.LOGIN_FAILED)).to_be_visible()
    assert page.get_by_text("Change a value").count() == 0
    assert page.get_by_role("link", name="Insights").count() == 0  # no navigation either
    page.close()

    # the operator edits the configuration, and it is recorded as hers
    olga_ws = Tap()
    olga = browser.new_page(viewport=viewport)
    olga.route_web_socket("**/_stcore/stream", olga_ws)
    _log_in(olga, port, "olga", PASSWORDS["olga"], "configuration")
    expect(olga.get_by_text("Signed in as olga (operator)")).to_be_visible()
    olga.screenshot(path=str(SHOTS / "login-operator.png"), full_page=True)
    main = olga.get_by_test_id("stMain")
    main.get_by_test_id("stSelectbox").first.click()
    olga.keyboard.type("ticker.interval_s")  # the list is long: filter it
    olga.get_by_role("option", name="ticker.interval_s", exact=True).click()
    main.get_by_label("New value", exact=False).fill("41")
    main.get_by_label("New value", exact=False).press("Enter")
    olga.get_by_role("button", name="Save", exact=True).click()
    expect(olga.get_by_text("Saved ticker.interval_s = 41")).to_be_visible()
    change = _values(url)["config_change"]
    assert change["by"] == "dashboard:olga" and change["keys"] == ["ticker.interval_s"]
    expect(olga.get_by_text("by dashboard:olga")).to_be_visible()

    # ... and requests an optimization cycle: keep the event her browser sent for it
    olga.get_by_role("link", name="Optimizations").click()
    button = olga.get_by_role("button", name="Request optimization cycle")
    expect(button).to_be_visible()
    mark = len(olga_ws.sent)
    button.click()
    expect(olga.get_by_text("Optimization cycle requested")).to_be_visible()
    first = _values(url)["optimization_request"]
    assert first["by"] == "dashboard:olga"
    forged = [m for m in olga_ws.sent[mark:] if isinstance(m, bytes)]
    assert forged, "no websocket message recorded for the click"

    # the viewer: the page, without the control; the operator's event sent down her own
    # websocket changes nothing
    vera_ws = Tap()
    vera = browser.new_page(viewport=viewport)
    vera.route_web_socket("**/_stcore/stream", vera_ws)
    _log_in(vera, port, "vera", PASSWORDS["vera"], "configuration")
    expect(vera.get_by_text("Signed in as vera (viewer)")).to_be_visible()
    expect(vera.get_by_text("Read-only: changing the configuration needs the operator "
                            "role.")).to_be_visible()
    assert vera.get_by_role("button", name="Save", exact=True).count() == 0
    vera.get_by_role("link", name="Optimizations").click()
    expect(vera.get_by_text("An optimization cycle is requested")).to_be_visible()
    assert vera.get_by_role("button", name="Request optimization cycle").count() == 0
    vera_ws.inject(vera, forged)
    expect(vera.get_by_text("Signed in as vera (viewer)")).to_be_visible()
    assert _values(url)["optimization_request"] == first  # nothing written
    assert vera.get_by_role("button", name="Request optimization cycle").count() == 0

    # the same bytes down the operator's websocket do write: the forgery was a real event
    olga_ws.inject(olga, forged)
    # a refresh the browser sent just before the injection may be the run that finished:
    # wait (bounded) for the write itself
    deadline = time.monotonic() + WAIT_S
    while (again := _values(url)["optimization_request"])["at"] == first["at"]:
        assert time.monotonic() < deadline, "the operator's event wrote nothing"
        olga.wait_for_timeout(100)
    assert again["by"] == "dashboard:olga" and again["at"] > first["at"]
