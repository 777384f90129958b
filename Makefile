# The two commands a new user needs: `make demo` and `make test`. Everything else is a step.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

RUNTIME_LOCK := images/runtime/requirements.lock
OPERATOR_LOCK := images/operator/requirements.lock

.PHONY: demo setup test test-workloads test-control test-unit test-integration test-training lint control-plane dev-cluster crds \
	images lock test-images test-reliability

# Install the project, with its training and dev extras, into .venv (again when pyproject or the
# lock changes). The images' lock constrains it, so tests run the versions the images carry.
# uv installs it (the dev extra pins the same uv, which `make lock` uses): it downloads in
# parallel and links from its cache, 18 s where pip took 2 min 17 s on the 2-core VM.
UV_VERSION := 0.13.8
setup: $(STAMP)
$(STAMP): pyproject.toml $(RUNTIME_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==$(UV_VERSION)
	sed -n 's/^\([A-Za-z0-9][^ ]*==[^ ]*\).*/\1/p' $(RUNTIME_LOCK) > $(VENV)/constraints.txt
	$(VENV)/bin/uv pip install --quiet --python $(PY) -c $(VENV)/constraints.txt -e '.[training,dev]'
	touch $@

# Pin the images' Python dependencies (versions and hashes) for Debian bookworm's Python 3.11 on
# x86_64. The operator's lock takes the runtime's versions, so the two images never disagree.
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_36 --generate-hashes \
	--no-header --quiet
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra training $(LOCK_FLAGS) -o $(RUNTIME_LOCK)
	$(VENV)/bin/uv pip compile pyproject.toml -c $(RUNTIME_LOCK) $(LOCK_FLAGS) -o $(OPERATOR_LOCK)

# Build the operator and runtime images (OCI archives, SBOMs, digests) without a container
# engine or registry; cached by the digest of their inputs. See docs/images.md. Of the Go
# builds it needs only syft (for the SBOMs), so it can run beside `make control-plane`.
images: setup
	hack/install-packages.sh
	hack/build-control-plane.sh syft >/dev/null
	$(PY) -m sovereign_operator.images build

# Build (or find in KUBEBUILDER_ASSETS / the cache) the control-plane binaries.
control-plane:
	hack/build-control-plane.sh

# Every test tier that runs without a GPU: unit, integration (real control plane), training,
# images (built by `make images`, run with runc), e2e (the real node). The Go builds are bound
# by the CPU and the image builds mostly by the disk and the network, so they run together, and
# lint beside them (on a warm machine the Go builds are cached and lint fills the CPU).
# Then two pytest processes run side by side, each with its own clusters: the tiers that run
# the product's workloads (e2e on the real node, which mostly waits on the disk and on pods
# starting; the images under runc; then training, with a local Ray) and the control-plane tiers
# (unit, integration, vllm), which mostly wait on controllers. The split keeps the two about
# equally long (docs/benchmarks.md). Each one's report is printed whole when it ends
# (--output-sync), the first to end first.
test: setup
	$(MAKE) --no-print-directory -j3 control-plane images lint
	$(MAKE) --no-print-directory -j2 --output-sync=target test-workloads test-control

WORKLOAD_TIERS := tests/e2e tests/images tests/training
test-workloads: setup control-plane images
	$(PY) -m pytest $(WORKLOAD_TIERS) -q --timeout=900 --durations=15

test-control: setup control-plane
	$(PY) -m pytest tests $(WORKLOAD_TIERS:%=--ignore=%) -q --timeout=900 --durations=15

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup control-plane
	$(PY) -m pytest tests -q -m integration --timeout=900

test-training: setup
	$(PY) -m pytest tests -q -m training --timeout=900

# The reliability suite: the failures adversarial tests found, hostile specs drawn by
# hypothesis against the real API server (SOVAI_FUZZ_SPECS, default 2000), and chaos (the
# operator killed every few seconds, kube-apiserver and etcd restarted; SOVAI_CHAOS_WAVES,
# default 10 waves of 10 jobs and 2 deployments); `make test` runs it too. Figures in
# docs/reliability.md.
test-reliability: setup control-plane
	$(PY) -m pytest tests/integration/test_reliability.py tests/integration/test_fuzz.py \
		tests/integration/test_chaos.py -q \
		--timeout=1800

test-images: images control-plane
	$(PY) -m pytest tests/images -q --timeout=900

# mypy's cache lives beside the other caches, not in the checkout: a fresh clone then checks
# only what changed (mypy revalidates each cached module by its content's hash, whatever the
# path), where a cold cache re-analyses torch, transformers and the rest for minutes.
MYPY_CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/sovereign-ai/mypy
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPY_CACHE_DIR=$(MYPY_CACHE_DIR) $(VENV)/bin/mypy

# The whole product on this machine, end to end (see README). Re-runnable; cleans up on exit.
# DEMO_ARGS=--keep keeps the cluster up afterwards, until Ctrl-C.
DEMO_ARGS ?=
demo: setup
	$(MAKE) --no-print-directory -j2 control-plane images
	$(VENV)/bin/sovai demo --workdir .demo $(DEMO_ARGS)

# Start the local cluster, print its kubeconfig, stop on Ctrl-C.
dev-cluster: setup control-plane
	$(VENV)/bin/sovai dev-cluster --workdir .cache/dev-cluster

# Regenerate crds/ (CRDs and admission policies) from the pydantic models in api/, and the
# chart's copy of them (a chart cannot read files outside itself; a unit test checks the copy).
crds: setup
	$(PY) -m sovereign_operator.crdgen --out crds
	cp crds/*.yaml charts/sovereign-ai-operator/files/crds/
