# One task runner: every check a developer runs is a target here, and CI runs the same targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install up test lint gen gen-check bench services-check clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,vault]'
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

## make bench: benchmarks, not tests. Installs h2load (Debian nghttp2-client) when missing.
bench: install
	@command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .modrpc .mypy_cache .ruff_cache .pytest_cache
