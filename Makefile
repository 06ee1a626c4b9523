# Two commands set everything up on a fresh clone: `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BGA    := $(VENV)/bin/bga
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: install run test lint bench dev clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,postgres,lint]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BGA) run --demo

dev: $(STAMP)
	LANGGRAPH_CLI_NO_ANALYTICS=1 LANGGRAPH_NO_VERSION_CHECK=true LANGSMITH_TRACING=$${LANGSMITH_TRACING:-false} \
	  $(VENV)/bin/langgraph dev --no-browser --port $${PORT:-2024}

# the browser tests drive Debian's chromium (Playwright never downloads a browser here); the
# Prometheus tests scrape with Debian's prometheus and check with its promtool
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus)

# two pytest-xdist workers; worksteal hands each a contiguous half (a module's shared fixture
# is mostly built once) and lets an idle one take from the other's tail. (loadgroup is no
# use: xdist 3.8 cannot rename pytest 9.2's node ids.) TEST_WORKERS=0: one process
TEST_WORKERS ?= 2
test: $(STAMP) browser
	$(PY) -m pytest -q -rs -p no:cacheprovider -n $(TEST_WORKERS) --dist worksteal

# ruff over the whole tree; mypy (pydantic plugin) over the paths in pyproject's [tool.mypy]
lint: $(STAMP)
	$(VENV)/bin/ruff check state nodes graph dashboard tests bench
	$(PY) -m mypy

# measurements, not tests: each script prints a table (see README "Measured figures")
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/write_throughput.py
	$(PY) bench/fold_throughput.py
	$(PY) bench/checkpoint_size.py
	$(PY) bench/read_latency.py
	$(PY) bench/tick_latency.py
	$(PY) bench/dashboard_load.py
	$(PY) bench/bridge_throughput.py
	$(PY) bench/import_throughput.py --rows 200000
	$(PY) bench/scale_out.py
	$(PY) bench/failover.py --with-traffic

clean:
	rm -rf $(VENV) data/state.db* data/state.profiles.db*
