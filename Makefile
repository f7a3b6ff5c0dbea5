# Every target installs what it needs into .venv first, so it works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint fmt install crds clean campaigns control-plane

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The stand-ins are distributions of their own (simulator/, emulator/): installed from here.
STANDINS := -e './simulator[postgres]' -e ./emulator

$(VENV)/.installed-test: pyproject.toml simulator/pyproject.toml emulator/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(STANDINS) -e '.[test]'
	touch $@

$(VENV)/.installed-demo: pyproject.toml simulator/pyproject.toml emulator/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(STANDINS) -e '.[demo]'
	touch $@

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/mpg-operator demo

test: lint control-plane
	$(BIN)/python -m pytest -q -rs

# A real control plane for the tests (etcd, kube-apiserver, kube-controller-manager), built with Go
# from tools/controlplane/ once, then reused from ~/.cache/mpg-operator/control-plane/ (or
# $$MPG_CONTROL_PLANE_CACHE). Without go the tests that need it skip (fail when CI=true).
control-plane: $(VENV)/.installed-test
	$(BIN)/python scripts/control_plane.py build --skip-without-go

# ruff (lint and format), the layers (import-linter), types (mypy: strict on the core and the client).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

fmt: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The reliability campaigns in their long form (docs/reliability.md); SEED=n replays one.
campaigns: $(VENV)/.installed-test
	$(BIN)/python scripts/campaigns.py $(if $(SEED),--seed $(SEED))

crds: $(VENV)/.installed-test
	$(BIN)/mpg-operator crd -o deploy/crds/managedpostgreses.clickhouse.cloud.yaml
	$(BIN)/mpg-operator crd --kind PostgresRole -o deploy/crds/postgresroles.clickhouse.cloud.yaml
	$(BIN)/mpg-operator crd --kind PostgresDatabase -o deploy/crds/postgresdatabases.clickhouse.cloud.yaml
	$(BIN)/python scripts/sync-chart-crds.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache
