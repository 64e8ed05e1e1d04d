# The front door. `make test` and `make demo` need only this repository,
# Python 3.11+ and the system package manager (for redis-server).
# Component fragments live in mk/*.mk and add their own targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PACKAGES := services/hybridcache services/catalog services/checker operator
PYPROJECTS := $(wildcard $(addsuffix /pyproject.toml,$(PACKAGES)))
# Fragments append system tools their tests need (targets that install them).
TEST_DEPS := redis-server-bin
LINT_PATHS := services operator tests bench
# mypy checks the packages together (strict for hybridcache, per
# pyproject.toml); MYPYPATH lets it see the editable installs.
MYPY := MYPYPATH=services/hybridcache:services/catalog:services/checker:operator $(BIN)/mypy
MYPY_PACKAGES := -p hybridcache -p catalog -p catalog_checker -p cache_operator

.PHONY: help venv test test-fast lint typecheck unit bench redis-server-bin clean

# Fragments come before the rules that use TEST_DEPS: prerequisites are
# expanded when a rule is read.
-include mk/*.mk

help:
	@echo "make test     - create .venv, install pinned deps and tools, lint, type-check, run every test"
	@echo "make test-fast - the same without the multi-process suites (pytest -m 'not slow')"
	@echo "make demo     - run Redis + 3 catalog replicas locally and a scripted scenario"
	@echo "make demo-down - stop what make demo left running"
	@echo "make bench    - run the benchmarks under bench/ (ratios against peers)"
	@echo "make kind-up  - deploy everything on a local kind cluster (needs docker, kind, kubectl, helm)"
	@echo "make kind-smoke / kind-down - check / remove that cluster"

venv: $(STAMP)

$(STAMP): requirements-dev.txt $(PYPROJECTS)
	@echo "==> creating $(VENV) and installing pinned dependencies"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt \
		$(foreach p,$(PACKAGES),$(if $(wildcard $(p)/pyproject.toml),-e $(p)[dev]))
	@touch $@

redis-server-bin:
	@command -v redis-server >/dev/null || { \
		echo "==> redis-server not found; installing it with apt-get"; \
		command -v apt-get >/dev/null || { echo "install redis-server (e.g. 'brew install redis') and retry" >&2; exit 1; }; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(MYPY) $(MYPY_PACKAGES)

test: venv $(TEST_DEPS) lint
	$(BIN)/pytest $(PYTEST_ARGS)

# The inner loop: lint and every test but the multi-process suites (marker
# `slow`: real replicas, the operator end to end, live Prometheus, image builds).
test-fast: venv $(TEST_DEPS) lint
	$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

bench: venv redis-server-bin wrk-bin
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
