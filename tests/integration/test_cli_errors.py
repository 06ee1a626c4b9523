"""One error policy for every ``bga`` command (``graph.cli_errors``): an unreachable database, a
missing file, a directory where a file belongs, a file of the wrong type are one short message
naming what was wrong and what to do, a non-zero exit code, no traceback, nothing written."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graph.cli import app
from tests.integration.test_cli import flat, run_bga

NOPE_DB = "postgresql://postgres@127.0.0.1:5432/nope"  # a server that has no such database


def closed_port_url() -> str:
    """A PostgreSQL URL on a local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/x"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _export_file(tmp_path: Path) -> Path:
    doc = tmp_path / "snapshot.json"
    doc.write_text(json.dumps({"format": "background-agents/state@1", "channels": {}}))
    return doc


# Every command that opens the database, with the arguments it needs to get that far.
COMMANDS: dict[str, list[str]] = {
    "status": ["status"],
    "status --json": ["status", "--json"],
    "export": ["export"],
    "restore": ["restore", "{export}"],
    "tick": ["tick"],
    "demo": ["demo"],
    "run": ["run", "--ticks", "1"],
    "worker": ["worker", "--agents", "profile_import", "--steps", "1"],
    "db upgrade": ["db", "upgrade"],
    "bridge sync": ["bridge", "sync"],
    "bridge sync --file": ["bridge", "sync", "--file", "{runs}"],
    "import": ["import", "{profiles}"],
    "import --show-rejected": ["import", "--show-rejected", "job_x"],
    "metrics": ["metrics", "--port", "0"],
    "alerts run": ["alerts", "run"],
    "alerts test": ["alerts", "test", "hook"],
    "alerts history": ["alerts", "history"],
}


def _args(template: list[str], tmp_path: Path) -> list[str]:
    runs = tmp_path / "runs.jsonl"
    runs.write_text('{"id": "r1", "name": "x"}\n')
    profiles = tmp_path / "p.csv"
    profiles.write_text("email\na@example.com\n")
    files = {"{export}": str(_export_file(tmp_path)), "{runs}": str(runs),
             "{profiles}": str(profiles)}
    return [files.get(a, a) for a in template]


@pytest.mark.parametrize("url", [NOPE_DB, "closed-port"], ids=["no-such-database", "no-server"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_unreachable_database_is_one_clean_message(command: str, url: str, tmp_path: Path,
                                                   runner: CliRunner) -> None:
    url = closed_port_url() if url == "closed-port" else url
    result = runner.invoke(app, [*_args(COMMANDS[command], tmp_path), "--db", url])
    text = flat(result.output)
    assert result.exit_code == 1, text
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert "Traceback" not in result.output and "╭" not in result.output
    assert "error:" in text and "PostgreSQL" in text and "127.0.0.1" in text, text
    assert len(result.output.strip().splitlines()) <= 6, result.output


def test_debug_shows_the_traceback(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--debug", "status", "--db", NOPE_DB])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConnectionError)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def test_export_to_a_directory_or_a_missing_directory(tmp_path: Path,
                                                      runner: CliRunner) -> None:
    url = _sqlite(tmp_path)
    assert runner.invoke(app, ["demo", "--db", url]).exit_code == 0
    result = runner.invoke(app, ["export", "-o", str(tmp_path), "--db", url])
    assert result.exit_code == 2
    assert f"{tmp_path} is a directory" in flat(result.output)
    assert "give a file name" in flat(result.output)
    missing = tmp_path / "missing" / "x.json"
    result = runner.invoke(app, ["export", "-o", str(missing), "--db", url])
    assert result.exit_code == 2
    assert f"the directory {missing.parent} does not exist" in flat(result.output)
    assert not missing.parent.exists()


def test_restore_of_a_latin1_csv_a_directory_or_a_binary(tmp_path: Path,
                                                         runner: CliRunner) -> None:
    url = _sqlite(tmp_path)
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("name\nJos\xe9\n".encode("latin-1"))
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    for path, what in ((latin1, "not UTF-8"), (tmp_path, "is a directory"),
                       (binary, "not UTF-8")):
        result = runner.invoke(app, ["restore", str(path), "--db", url])
        assert result.exit_code == 2, result.output
        text = flat(result.output)
        assert f"cannot read {path}" in text and what in text, text
        assert "bga export" in text  # what to give instead
    assert not (tmp_path / "state.db").exists()  # nothing was opened or created


def test_import_of_a_directory(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["import", str(tmp_path), "--db", _sqlite(tmp_path)])
    assert result.exit_code == 2
    assert "is a directory, not a file" in flat(result.output)


@pytest.mark.parametrize("content", [b"email,name\na@b.c,A\nd@e.f,D\n",
                                     bytes(range(256)) * 16, b"[1, 2, 3]\n"],
                         ids=["csv", "binary", "json-array"])
def test_bridge_sync_refuses_a_file_that_is_not_runs(content: bytes, tmp_path: Path,
                                                     runner: CliRunner) -> None:
    url = _sqlite(tmp_path)
    path = tmp_path / "runs.jsonl"
    path.write_bytes(content)
    result = runner.invoke(app, ["bridge", "sync", "--file", str(path), "--db", url])
    assert result.exit_code == 2, result.output
    assert "is not a JSON Lines export of runs" in flat(result.output)
    assert not (tmp_path / "state.db").exists()  # refused before anything was written


@pytest.mark.slow
def test_the_real_executable_prints_no_traceback(tmp_path: Path) -> None:
    proc = run_bga("status", "--db", NOPE_DB, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 4
    assert 'database "nope" does not exist' in flat(proc.stderr)
