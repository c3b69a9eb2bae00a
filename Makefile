# visionflow: `make demo` and `make test` bootstrap .venv from requirements.lock on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip -qq --disable-pip-version-check

export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export NO_ALBUMENTATIONS_UPDATE := 1

# Re-install only when the lock changed since the last install (make compares mtimes: seconds).
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || \
	  { echo "visionflow needs Python 3.11: install it or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (first run: ~2 min)"
	@# torch first and alone: the local CPU wheel; anything else would pull CUDA packages
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.lock
	@# the project itself, editable: flows, tasks, benchmarks and tests import ml/ without sys.path edits
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $(STAMP)

.PHONY: help venv demo test lint server worker training-limit deploy bench lock clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

venv: $(STAMP) ## create .venv and install the lock (skipped when up to date)

demo: $(STAMP) ## run the whole retrain pipeline on generated data, no server
	$(PY) -m flows.demo

# pytest processes for `make test`, each taking whole files (their servers are module fixtures) in collection
# order, which tests/conftest.py starts with the longest (xdist's default order is most tests first); most of the
# suite waits on subprocesses and servers, so 2 roughly halve its time on a 2-core machine. TEST_WORKERS=0: serial
TEST_WORKERS ?= 2
test: $(STAMP) ## run the test suite
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A local Prefect server and UI (SQLite), its worker and the deployments of prefect.yaml.
# The server keeps its own PREFECT_HOME: ephemeral runs (make demo) must not share its database.
PORT    ?= 4200
# what `make deploy` registers of prefect.yaml: every deployment, or e.g. DEPLOY="--name retrain/demo"
DEPLOY  ?= --all
# slots of this machine's training limit: one per GPU nvidia-smi sees, 1 without (a CPU worker trains one at a time)
SLOTS   ?= $(shell n=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU'); echo $$(( n > 0 ? n : 1 )))
LIMIT   := training-$(shell hostname)
POOL    := visionflow
PREFECT := $(VENV)/bin/prefect --no-prompt
ENSURE_POOL = $(PREFECT) work-pool inspect $(POOL) >/dev/null 2>&1 || $(PREFECT) work-pool create $(POOL) --type process
# the automation names in a YAML file (one automation, a list, or {automations: [...]}), one per line
AUTOMATION_NAMES := import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); \
	d = d.get("automations", d) if isinstance(d, dict) else d; print(*(a["name"] for a in (d if isinstance(d, list) else [d])), sep="\n")
# the id of the Webhook block `visionflow-alerts` that alert automations call (WEBHOOK_BLOCK_ID in their files);
# saved from $$VISIONFLOW_WEBHOOK_URL first when that is set
WEBHOOK_ID := import os; from prefect.blocks.webhook import Webhook; url = os.environ.get("VISIONFLOW_WEBHOOK_URL"); \
	print(Webhook(url=url, headers={"Content-Type": "application/json"}).save("visionflow-alerts", overwrite=True) if url else Webhook.load("visionflow-alerts")._block_document_id)
server: export PREFECT_HOME := $(PREFECT_HOME)/server
worker training-limit deploy: export PREFECT_API_URL ?= http://127.0.0.1:$(PORT)/api

server: $(STAMP) ## start the Prefect server and UI on http://127.0.0.1:PORT (PORT=4200)
	@mkdir -p "$$PREFECT_HOME"
	PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_SERVER_API_PORT=$(PORT) $(PREFECT) server start

worker: $(STAMP) training-limit ## start a worker on the visionflow process pool (created if missing)
	$(ENSURE_POOL)
	$(PREFECT) worker start --pool $(POOL)

training-limit: $(STAMP) ## create or resize this machine's training limit, training-<host>, to SLOTS slots
	$(PREFECT) gcl inspect $(LIMIT) >/dev/null 2>&1 && $(PREFECT) gcl update $(LIMIT) --limit $(SLOTS) \
	  || $(PREFECT) gcl create $(LIMIT) --limit $(SLOTS)

deploy: $(STAMP) ## register prefect.yaml and deployments/automations/*.yaml
	$(ENSURE_POOL)
	$(PREFECT) deploy $(DEPLOY)
	@# the weekly labeling pools of prefect.yaml: an empty pool is "nothing to label", a missing one a crash
	@grep -o '^ *pool: \.visionflow/pool/[^ ]*' prefect.yaml | sed 's/^ *pool: //' | xargs mkdir -p
	@# an automation is replaced by name, so deploying twice never makes an alert fire twice
	@tmp=$$(mktemp --suffix=.yaml); trap 'rm -f "$$tmp"' EXIT; \
	for f in $(wildcard deployments/automations/*.yaml); do \
	  id=; if grep -q WEBHOOK_BLOCK_ID "$$f" && ! id=$$($(PY) -c '$(WEBHOOK_ID)' 2>/dev/null); then \
	    echo "skipped $$f: needs the Webhook block visionflow-alerts; run with VISIONFLOW_WEBHOOK_URL=<url>"; continue; fi; \
	  sed "s/WEBHOOK_BLOCK_ID/$$id/g" "$$f" > "$$tmp"; \
	  $(PY) -c '$(AUTOMATION_NAMES)' "$$tmp" | while read -r name; do \
	    $(PREFECT) automation delete "$$name" >/dev/null 2>&1 || true; done; \
	  $(PREFECT) automation create --from-file "$$tmp" || exit 1; \
	done

bench: $(STAMP) ## the orchestration-overhead benchmark (the others: README "Benchmarks"; not part of CI)
	$(PY) benchmarks/overhead.py

lock: ## re-resolve requirements.in into requirements.lock (needs the registry)
	rm -rf /tmp/visionflow-lock && $(PYTHON) -m venv /tmp/visionflow-lock
	/tmp/visionflow-lock/bin/pip -qq install torch==2.13.0
	/tmp/visionflow-lock/bin/pip -qq install -r requirements.in
	/tmp/visionflow-lock/bin/pip freeze | sed 's/^torch==2.13.0+cpu$$/torch==2.13.0/' > requirements.lock

clean: ## remove the venv and local store
	rm -rf $(VENV) .visionflow .prefect
