# One task runner: every check a developer runs is a target here, and CI runs the same targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install up test lint gen gen-check bench faults services-check clean

# One line per step; pip's own output goes to $(VENV)/install.log, shown only when a step fails.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing modrpc and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(BIN)/python -m pip install -q --upgrade pip > $(VENV)/install.log 2>&1 \
		&& $(BIN)/python -m pip install -q -e '.[dev,vault,testing]' >> $(VENV)/install.log 2>&1 \
		|| { tail -n 30 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

## make up: the gateway on 127.0.0.1:50051 and one worker per module, on embedded backends.
up: install
	$(BIN)/modrpc up

## make test: generated code is current, lint is clean, then the whole suite.
## The playground's browser tests drive Debian's chromium: installed here when missing, like h2load.
test: install
	@(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver)
	$(BIN)/modrpc gen --check
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check runtime modules tests bench
	$(BIN)/mypy
	for d in proto/*/*/; do $(BIN)/buf lint "$$d" --config proto/buf.yaml || exit 1; done

gen: install
	$(BIN)/modrpc gen

gen-check: install
	$(BIN)/modrpc gen --check

## make faults: every fault scenario under load on private PostgreSQL, NATS and Redis; prints the
## table (make test runs the short version).
faults: install
	$(BIN)/python -m tests.faults

## make bench: benchmarks, not tests. Installs h2load (Debian nghttp2-client) and nginx (the
## worker is measured behind it: it takes mutual TLS only) when missing.
bench: install
	@command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	@(command -v nginx || test -x /usr/sbin/nginx) >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx-light || apt-get install -y -qq nginx)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .modrpc .mypy_cache .ruff_cache .pytest_cache
