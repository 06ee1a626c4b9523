"""The real ``bga`` executable, run as a child process on a SQLite file per test.

Every command gets ``--db`` (except where the test is about ``BGA_DATABASE_URL`` and ``.env``);
children run in the test's temporary directory with a scrubbed environment, so neither the
developer's database nor a LangSmith key can leak in. The helpers here are shared with
``test_scheduler.py`` and ``test_tracing.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from state import SharedState
from state.backends import SchemaNotReady

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 90.0

# Variables a developer may have set that would change what a child does.
_SCRUBBED_PREFIXES = ("BGA_", "LANGSMITH_", "LANGCHAIN_")


def bga_command() -> list[str]:
    """The installed ``bga`` console script (falls back to ``python -m graph.cli``)."""
    exe = Path(sys.executable).parent / "bga"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("bga")
    if found:
        return [found]
    return [sys.executable, "-m", "graph.cli"]


def child_env(*, keep_tracing: bool = False, **extra: str) -> dict[str, str]:
    """A copy of this process's environment without BGA_* but the agent allow-list (and
    LangSmith settings unless ``keep_tracing``), plus ``extra``."""
    prefixes = ("BGA_",) if keep_tracing else _SCRUBBED_PREFIXES
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(prefixes) or k == "BGA_AGENT_CLASSES"}  # the operator's policy
    env.update(extra)
    return env


def sqlite_url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def flat(text: str) -> str:
    """Output with every run of whitespace made one space (rich wraps long lines at 80 columns
    when stdout is not a terminal)."""
    return " ".join(text.split())


def run_bga(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = RUN_TIMEOUT_S, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``bga ARGS`` to completion; with ``check`` a non-zero exit fails with its output."""
    proc = subprocess.run([*bga_command(), *args], cwd=cwd, env=child_env() if env is None else env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        pytest.fail(f"bga {' '.join(args)} exited {proc.returncode}\n"
                    f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}")
    return proc


class BgaProcess:
    """A long-running ``bga`` child whose output goes to files (never a full pipe)."""

    def __init__(self, name: str, *args: str, cwd: Path, env: dict[str, str] | None = None):
        self.name = name
        self.out_path = cwd / f"{name}.out"
        self.err_path = cwd / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([*bga_command(), *args], cwd=cwd,
                                         env=child_env() if env is None else env,
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def describe(self) -> str:
        return (f"{self.name} (pid {self.proc.pid}, exit {self.proc.returncode})\n"
                f"stdout tail:\n{self.output()[-2000:]}\n"
                f"stderr tail:\n{self.err_path.read_text(errors='replace')[-3000:]}")

    def tick_lines(self) -> int:
        """How many ``tick: ...`` lines (one per completed tick) it has printed."""
        return len(re.findall(r"^tick: ", self.output(), flags=re.MULTILINE))

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Wait until ``text`` appears in its (whitespace-normalised) stdout."""
        deadline = time.monotonic() + timeout
        while text not in flat(self.output()):
            if self.proc.poll() is not None and text not in flat(self.output()):
                pytest.fail(f"exited before printing {text!r}: {self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} after {timeout} s: {self.describe()}")
            time.sleep(0.02)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"did not exit within {timeout} s: {self.describe()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


class Children:
    """Starts ``bga`` children and SIGKILLs whatever is still running at the end."""

    def __init__(self, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = env
        self.started: list[BgaProcess] = []

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> BgaProcess:
        child = BgaProcess(name, *args, cwd=self.cwd, env=env or self.env)
        self.started.append(child)
        return child

    def cleanup(self) -> None:
        for child in self.started:
            if child.proc.poll() is None:
                child.proc.kill()
        for child in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):  # nothing more we can do
                child.proc.wait(30)


async def _read_state(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    async with SharedState.open(url, producer="tests", read_only=True) as shared:
        return await shared.read(), await shared.get_system_state()


def read_state(url: str) -> dict[str, Any]:
    """The state's values (checkpoint plus unfolded rows), read in this process."""
    return asyncio.run(_read_state(url))[0]


def system_state(url: str) -> dict[str, Any]:
    """``get_system_state()`` read in this process."""
    return asyncio.run(_read_state(url))[1]


def state_so_far(url: str) -> dict[str, Any]:
    """``read_state`` for polls: empty while the database is not there yet (a read-only open
    never makes it, and a scheduler just started may still be creating it)."""
    try:
        return read_state(url)
    except SchemaNotReady:
        return {}


def ticks_of(url: str) -> int:
    """Ticks so far; 0 while the database is not there yet (``state_so_far``)."""
    try:
        return int(system_state(url)["stats"].get("ticks", 0))
    except SchemaNotReady:
        return 0


async def _write_metrics(url: str, series: str, n: int) -> None:
    source, name = series.split("/")
    async with SharedState.open(url, producer="tests") as shared:
        await shared.add_performance_metrics(
            [{"source_agent": source, "name": name, "value": float(i)} for i in range(n)])


def write_metrics(url: str, series: str, n: int) -> None:
    """Write ``n`` metrics of ``series`` ("agent/name") through the API (acknowledged)."""
    asyncio.run(_write_metrics(url, series, n))


def metric_count(url: str, series: str) -> int:
    async def go() -> int:
        async with SharedState.open(url, producer="tests", read_only=True) as shared:
            summary = await shared.get_performance_summary(hours=1)
        return int(summary["series"].get(series, {}).get("count", 0))

    return asyncio.run(go())


# -- the tests ---------------------------------------------------------------------------------


async def _export(url: str) -> dict[str, Any]:
    async with SharedState.open(url, producer="tests", read_only=True) as shared:
        return await shared.export_state()


def export_in_process(url: str) -> dict[str, Any]:
    return asyncio.run(_export(url))


class Demo:
    """A database after ``bga demo`` (shared by the tests of this module: never modified)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = sqlite_url_of(directory / "demo.db")
        self.stdout = run_bga("demo", "--db", self.url, cwd=directory).stdout
        self.snapshot = directory / "snapshot.json"
        exported = run_bga("export", "-o", str(self.snapshot), "--db", self.url, cwd=directory)
        assert "exported to" in flat(exported.stderr)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url_of(tmp_path / "state.db")


@pytest.mark.slow
def test_demo_then_status_json_shows_agents_and_metrics(tmp_path: Path, demo: Demo) -> None:
    said = re.search(r"wrote (\d+) events .* one tick folded (\d+) of them", flat(demo.stdout))
    assert said, demo.stdout
    written, folded = int(said.group(1)), int(said.group(2))
    assert written > 0
    assert folded == written

    status = run_bga("status", "--json", "--db", demo.url, cwd=tmp_path)
    data = json.loads(status.stdout)
    agents = {a["agent_id"]: a for a in data["agents"]}
    assert {"profile_import", "langsmith_bridge"} <= set(agents)
    assert agents["profile_import"]["kind"] == "profile_import"
    assert agents["profile_import"]["heartbeats"] >= 1
    series = data["performance"]["series"]
    # 1200 latency samples spread over the last hour (the oldest minute may fall out).
    assert 0 < series["profile_import/batch_latency_ms"]["count"] <= 1200
    assert data["performance"]["overall"]["count"] > 0
    stats = data["system"]["stats"]
    assert int(stats["events_folded"]) == written
    assert int(stats["ticks"]) == 1
    assert data["system"]["inbox"]["pending"] == 0
    assert data["system"]["values"]["mode"] == "demo"

    table = run_bga("status", "--db", demo.url, cwd=tmp_path)
    text = flat(table.stdout)
    assert "profile_import" in text
    assert f"events folded: {written}" in text
    assert "ticks: 1" in text


@pytest.mark.slow
def test_export_restore_export_is_identical(tmp_path: Path, demo: Demo) -> None:
    document = json.loads(demo.snapshot.read_text())
    assert document["format"] == "background-agents/state@1"
    assert "profile_import" in document["channels"]["agents"]

    other = sqlite_url_of(tmp_path / "restored.db")
    restored = run_bga("restore", str(demo.snapshot), "--db", other, cwd=tmp_path)
    assert "restored" in restored.stderr
    second = tmp_path / "second.json"
    run_bga("export", "-o", str(second), "--db", other, cwd=tmp_path)
    assert second.read_bytes() == demo.snapshot.read_bytes()

    to_stdout = run_bga("export", "--db", other, cwd=tmp_path)
    assert json.loads(to_stdout.stdout) == document


@pytest.mark.slow
@pytest.mark.parametrize("target", ["has-checkpoint", "has-inbox-rows-only"])
def test_restore_into_non_empty_db_refuses_and_changes_nothing(
    tmp_path: Path, url: str, demo: Demo, target: str
) -> None:
    if target == "has-checkpoint":
        run_bga("tick", "--db", url, cwd=tmp_path)
    else:
        write_metrics(url, "other/thing", 3)
    snapshot = json.loads(demo.snapshot.read_text())
    before = export_in_process(url)
    assert before != snapshot  # so a restore that happened would show

    refused = run_bga("restore", str(demo.snapshot), "--db", url, cwd=tmp_path, check=False)

    assert refused.returncode != 0
    assert "not empty" in flat(refused.stderr)
    assert "Traceback" not in refused.stderr
    assert export_in_process(url) == before
    assert metric_count(url, "other/thing") == (3 if target == "has-inbox-rows-only" else 0)

    forced = run_bga("restore", str(demo.snapshot), "--force", "--db", url, cwd=tmp_path)
    assert "restored" in forced.stderr
    after = export_in_process(url)
    if target == "has-checkpoint":
        assert after == snapshot
    else:  # acknowledged rows still in the inbox are not lost: they fold on top
        assert after["channels"]["agents"] == snapshot["channels"]["agents"]
        assert metric_count(url, "other/thing") == 3


@pytest.mark.slow
def test_restore_of_unreadable_or_foreign_file_fails_cleanly(tmp_path: Path, url: str) -> None:
    missing = run_bga("restore", str(tmp_path / "nope.json"), "--db", url, cwd=tmp_path,
                      check=False)
    assert missing.returncode == 2
    assert "cannot read" in flat(missing.stderr)
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"format": "something-else", "channels": {}}))
    refused = run_bga("restore", str(foreign), "--db", url, cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert ticks_of(url) == 0
    assert system_state(url)["agents"]["registered"] == 0


@pytest.mark.slow
def test_tick_prints_a_line_folds_pending_events_and_counts_ticks(tmp_path: Path,
                                                                  url: str) -> None:
    write_metrics(url, "ext/latency_ms", 5)
    assert ticks_of(url) == 0

    first = run_bga("tick", "--db", url, cwd=tmp_path)
    lines = first.stdout.strip().splitlines()
    assert len(lines) == 1, first.stdout
    assert re.fullmatch(r"tick done in \d+ ms: folded 5 events, pruned \d+ checkpoints",
                        lines[0]), lines[0]
    assert ticks_of(url) == 1
    assert metric_count(url, "ext/latency_ms") == 5

    second = run_bga("tick", "--db", url, cwd=tmp_path)
    assert "folded 0 events" in second.stdout
    state = system_state(url)
    assert int(state["stats"]["ticks"]) == 2
    assert int(state["stats"]["events_folded"]) == 5
    assert state["values"]["last_tick"]["n"] == 2
    assert metric_count(url, "ext/latency_ms") == 5


@pytest.mark.slow
def test_database_url_from_environment_and_dotenv_when_no_db_flag(tmp_path: Path,
                                                                  url: str) -> None:
    env = child_env(BGA_DATABASE_URL=url)
    missing = run_bga("status", "--json", cwd=tmp_path, env=env, check=False)
    assert missing.returncode == 2 and "no state database" in flat(missing.stderr)
    assert not (tmp_path / "state.db").exists()  # a read-only command creates nothing
    run_bga("tick", cwd=tmp_path, env=env)
    assert ticks_of(url) == 1
    status = json.loads(run_bga("status", "--json", cwd=tmp_path, env=env).stdout)
    assert int(status["system"]["stats"].get("ticks", 0)) == 1
    assert not (tmp_path / "data").exists()  # the default ./data/state.db was never touched

    other = sqlite_url_of(tmp_path / "other.db")
    run_bga("tick", "--db", other, cwd=tmp_path, env=env)  # --db wins over the environment
    assert ticks_of(other) == 1
    assert ticks_of(url) == 1

    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / ".env").write_text(f"BGA_DATABASE_URL={url}\n")
    run_bga("tick", cwd=workdir)  # no BGA_* in the environment: .env in the cwd decides
    assert ticks_of(url) == 2
    assert not (workdir / "data").exists()


@pytest.mark.slow
def test_bad_database_url_is_a_clean_error(tmp_path: Path) -> None:
    bad = run_bga("status", "--db", "mysql://nowhere/x", cwd=tmp_path, check=False)
    assert bad.returncode == 2
    assert "unsupported database URL" in flat(bad.stderr)
    assert "Traceback" not in bad.stderr
