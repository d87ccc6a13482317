# Stigg webhooks on AWS Lambda. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help tools test test-unit build lint fmt clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

tools: $(VENV)/.installed ## Install local tooling (moto, cargo-lambda, cfn-lint) into .venv

test: tools ## Unit + integration tests (integration against a private moto on 127.0.0.1)
	scripts/with-moto.sh cargo test

test-unit: ## Unit tests only (no emulator)
	cargo test --lib --bins

build: tools ## Release build of both functions for Lambda (arm64)
	cargo lambda build --release --arm64

lint: tools ## cfn-lint the SAM template
	$(VENV)/bin/cfn-lint template.yaml

fmt: ## Format the code
	cargo fmt

clean: ## Remove build outputs (keeps .venv)
	cargo clean
	rm -rf .aws-sam
