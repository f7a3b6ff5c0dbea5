# Every target installs what it needs into .venv first, so it works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install crds clean campaigns

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'
	touch $@

install: $(VENV)/.installed-test

demo: $(VENV)/.installed-demo
	$(BIN)/mpg-operator demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -rs

# The reliability campaigns in their long form (docs/reliability.md); SEED=n replays one.
campaigns: $(VENV)/.installed-test
	$(BIN)/python scripts/campaigns.py $(if $(SEED),--seed $(SEED))

crds: $(VENV)/.installed-test
	$(BIN)/mpg-operator crd -o deploy/crds/managedpostgreses.clickhouse.cloud.yaml
	$(BIN)/python scripts/sync-chart-crds.py

clean:
	rm -rf $(VENV) .tools .pytest_cache
