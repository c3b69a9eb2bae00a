# visionflow: `make demo` and `make test` bootstrap .venv from requirements.lock on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip -qq --disable-pip-version-check

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONPATH := $(CURDIR)

# Re-install only when the lock changed since the last install (make compares mtimes: seconds).
$(STAMP): requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first run: ~2 min)"
	@# torch first and alone: the local CPU wheel; anything else would pull CUDA packages
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.lock
	@touch $(STAMP)

.PHONY: help venv demo test lint bench lock clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install the lock (skipped when up to date)

demo: $(STAMP) ## run the whole retrain pipeline on generated data, no server
	$(PY) -m flows.demo

test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP) ## run the benchmarks (not part of CI)
	$(PY) benchmarks/overhead.py

lock: ## re-resolve requirements.in into requirements.lock (needs the registry)
	rm -rf /tmp/visionflow-lock && python3 -m venv /tmp/visionflow-lock
	/tmp/visionflow-lock/bin/pip -qq install torch==2.13.0
	/tmp/visionflow-lock/bin/pip -qq install -r requirements.in
	/tmp/visionflow-lock/bin/pip freeze | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > requirements.lock

clean: ## remove the venv and local store
	rm -rf $(VENV) .visionflow .prefect
