"""Streamlit options the dashboard's speed depends on (dashboard/.streamlit/config.toml), in
effect when Streamlit loads its configuration for dashboard/app.py as ``streamlit run`` does."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"

# Streamlit's CLI path (streamlit.web.cli._main_run): the main script's path is set before the
# options are loaded, so the script-level config file is read with the global and project ones.
PROBE = """
import json, sys
from streamlit import config
from streamlit.web import bootstrap

config._main_script_path = sys.argv[1]
bootstrap.load_config_options(flag_options={})
print(json.dumps({name: config.get_option(name)
                  for name in ("runner.postScriptGC", "server.fileWatcherType")}))
"""


def test_a_script_run_does_not_walk_the_whole_heap(tmp_path: Path) -> None:
    """Streamlit's default collects every generation after each script run; with a full state
    cached (500 series: ~800k tracked lists) that was 0.3-0.7 s of CPU per page and per live
    refresh of every session. The app's config turns it off, and the file watcher (a walk of
    every imported module's path per new session)."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(APP)], cwd=tmp_path, check=True,
                         env={**os.environ, "HOME": str(tmp_path)},  # no user config file
                         capture_output=True, text=True, timeout=120)
    options = json.loads(out.stdout.strip().splitlines()[-1])
    assert options == {"runner.postScriptGC": False, "server.fileWatcherType": "none"}
    # the option still decides what Streamlit's script runner does after a run (AppTest's runner
    # skips that step, so a page test would not notice a rename)
    after_run = inspect.getsource(ScriptRunner._on_script_finished)
    assert 'config.get_option("runner.postScriptGC")' in after_run
    assert "gc.collect(" in after_run
