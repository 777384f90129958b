# The two commands a new user needs: `make demo` and `make test`. Everything else is a step.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo setup test test-unit test-integration test-training lint control-plane dev-cluster crds

# Install the project, with its training and dev extras, into .venv (again when pyproject changes).
setup: $(STAMP)
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[training,dev]'
	touch $@

# Build (or find in KUBEBUILDER_ASSETS / the cache) the control-plane binaries.
control-plane:
	hack/build-control-plane.sh

# Every test tier that runs without a GPU: unit, integration (real control plane), training.
test: setup control-plane lint
	$(PY) -m pytest tests -q --timeout=900

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup control-plane
	$(PY) -m pytest tests -q -m integration --timeout=900

test-training: setup
	$(PY) -m pytest tests -q -m training --timeout=900

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole product on this machine, end to end (see README). Re-runnable; cleans up on exit.
demo: setup control-plane
	$(VENV)/bin/sovai demo --workdir .demo

# Start the local cluster, print its kubeconfig, stop on Ctrl-C.
dev-cluster: setup control-plane
	$(VENV)/bin/sovai dev-cluster --workdir .cache/dev-cluster

# Regenerate crds/ (CRDs and admission policies) from the pydantic models in api/, and the
# chart's copy of them (a chart cannot read files outside itself; a unit test checks the copy).
crds: setup
	$(PY) -m sovereign_operator.crdgen --out crds
	cp crds/*.yaml charts/sovereign-ai-operator/files/crds/
