# gotflow — run `make` for the list of targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT   := $(CURDIR)
TF_DIR := $(ROOT)/third_party/libtensorflow
PYTHON := $(ROOT)/.venv/bin/python
GO     ?= go

# Build settings for cgo against the libtensorflow that
# scripts/install-libtensorflow.sh lays out (the same as
# third_party/libtensorflow/env.sh, for use outside make).
export CGO_ENABLED     := 1
export CGO_CFLAGS      := -I$(TF_DIR)/include
export CGO_LDFLAGS     := -L$(TF_DIR)/lib -ltensorflow_framework -Wl,-rpath,$(TF_DIR)/lib
export LD_LIBRARY_PATH := $(TF_DIR)/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
export GOTFLOW_PYTHON  := $(PYTHON)
export TF_CPP_MIN_LOG_LEVEL ?= 2

GOTFLOW := $(ROOT)/bin/gotflow

.PHONY: help install test test-go test-race test-python vet lint bench demo fixtures generate check-generate build clean

help: ## Show this help.
	@echo "gotflow — train and serve TensorFlow models from Go"
	@echo
	@echo "  make demo       run the main job on the committed example data"
	@echo "  make test       install what is missing, then vet and run every test"
	@echo
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: ## Install libtensorflow (from the tensorflow-cpu wheel) and the Python venv; TF_VARIANT=gpu for CUDA.
	@scripts/install-libtensorflow.sh
	@$(GO) mod download

build: install ## Build bin/gotflow.
	@$(GO) build -o $(GOTFLOW) ./cmd/gotflow

vet: install ## go vet every package.
	$(GO) vet ./...

lint: vet ## gofmt check and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

test: install vet test-go test-race test-python ## Install what is missing, vet, and run all tests (Go, race, Python).

test-go:
	$(GO) test -count=1 ./...

# Packages that do not link libtensorflow run again under the race detector.
test-race:
	@pkgs=$$($(GO) list -f '{{.ImportPath}} {{join .Deps " "}}' ./... | awk '$$0 !~ /gotflow\/gotflow\/tf( |$$)/ && $$0 !~ /wamuir\/graft\/tensorflow( |$$)/ {print $$1}'); \
	echo "race: $$(echo $$pkgs | wc -w) packages"; \
	$(GO) test -race -count=1 $$pkgs

test-python: build
	@if [ -d scripts/converter/tests ]; then cd scripts/converter && $(PYTHON) -m pytest -q tests; fi
	@if [ -d spark/tests ]; then GOTFLOW_BIN=$(GOTFLOW) $(PYTHON) -m pytest -q spark/tests; fi

bench: install ## Run the benchmarks; results go to bench/results/<area>.json.
	@for d in bench/*/; do \
	  if [ -f "$$d/main.go" ]; then echo "== bench $$d"; $(GO) run ./$$d -out bench/results/$$(basename $$d).json; fi; \
	done

demo: build ## The main job on committed data.
	@scripts/demo.sh $(GOTFLOW)

fixtures: install ## Regenerate the Python-made test models and fixtures.
	$(PYTHON) scripts/fixtures/generate.py
	@for g in ps/testdata/gen_*.py loader/testdata/gen_*.py estimator/testdata/gen_*.py examples/*/make_*.py; do \
	  if [ -f "$$g" ]; then echo "== $$g"; $(PYTHON) $$g; fi; \
	done

generate: ## Regenerate protobuf code.
	scripts/generate-proto.sh

check-generate: ## Fail if the committed protobuf code is stale.
	scripts/generate-proto.sh --check

clean: ## Remove build outputs (not the venv or libtensorflow).
	rm -rf bin
