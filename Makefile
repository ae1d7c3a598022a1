# Two commands set everything up on a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
UI_PORT ?= 3000

.PHONY: demo test ui install clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

# The local instance of `make demo` and `make ui`: SQLite in .dagster_home. The production one is
# dagster.yaml (PostgreSQL). Run monitoring through the project's launcher marks failed the
# runs of a CLI process that died (defs/in_process_runs/run_workers.py) while `make ui`'s daemon runs.
$(DAGSTER_HOME)/dagster.yaml: | $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	printf '%s\n' 'telemetry:' '  enabled: false' \
	  'run_launcher:' '  module: feedback_loop_dagster.defs.in_process_runs.run_workers' '  class: RunWorkerAwareLauncher' \
	  'run_monitoring:' '  enabled: true' '  poll_interval_seconds: 30' \
	  'freshness:' '  enabled: true' > $@

demo: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/feedback-loop demo

# The whole suite, on every core (pytest-xdist). Each worker takes whole modules, so a module's shared
# deployment (integration/) starts once, in collection order, where conftest.py puts the end-to-end
# tests first. (Not --dist loadgroup: with pytest 9.2 it silently stops grouping, pytest-xdist #1386.)
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadscope --no-loadscope-reorder

# `dg dev` (dagster-dg-cli), which Dagster 1.13 recommends over `dagster dev`, on workspace.yaml
# (the code location the daemon and the webserver of a deployment load). It starts inside
# $(DAGSTER_HOME): from the repository's root, Dagster would find the production dagster.yaml in its
# working folder and warn that it is ignored. Its daemon and webserver, which create runs without
# importing the code location, get the code location's event levers (defs/code_location/event_levers.py).
ui: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	cd $(DAGSTER_HOME) && VIRTUAL_ENV=$(CURDIR)/$(VENV) PATH=$(CURDIR)/$(BIN):$$PATH \
	  env $$($(CURDIR)/$(BIN)/python -m feedback_loop_dagster.defs.code_location.event_levers) \
	  $(CURDIR)/$(BIN)/dg dev -h 127.0.0.1 -p $(UI_PORT) -w $(CURDIR)/workspace.yaml

clean:
	rm -rf data .dagster_home
