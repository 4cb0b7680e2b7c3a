# datamover: everything a fresh machine needs is installed by these targets.
#   make demo   install, start local servers, copy to a bucket and back, verify
#   make test   install and run the whole test suite (real local servers, real FUSE)
#   make bench  side-by-side benchmarks (see bench/README.md)
#   make conformance  pjdfstest on the mount (and s3fs), a baseline, not a gate

SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS := $(ROOT)/.tools
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
AZURITE_VERSION := 3.35.0
PY_SOURCES := datamover fuse tests bench scripts

export DATAMOVER_AZURITE := $(TOOLS)/node_modules/.bin/azurite-blob
# Never let a CA bundle meant for another proxy break local HTTP servers.
unexport AWS_CA_BUNDLE

.PHONY: help setup system-deps python-deps node-deps test demo lint check bench clean \
	conformance conformance-deps

help:
	@echo "make demo   - install, start local servers, run a real transfer + verify"
	@echo "make test   - install and run the whole test suite"
	@echo "make check  - ruff lint and format check (part of make test)"
	@echo "make lint   - make check, then mypy"
	@echo "make bench  - side-by-side benchmarks"
	@echo "make conformance - pjdfstest on the mount and on s3fs (needs a built pjdfstest)"

setup: system-deps python-deps node-deps

# fuse3 + libfuse3-dev + pkg-config: pyfuse3 compiles against libfuse3, tests mount;
# rsync: the mount tests drive the mount with it.
system-deps:
	@if ! command -v fusermount3 >/dev/null || ! pkg-config --exists fuse3 2>/dev/null \
	    || ! command -v rsync >/dev/null; then \
	  echo "installing fuse3, libfuse3-dev, pkg-config, rsync"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq fuse3 libfuse3-dev pkg-config rsync >/dev/null; \
	fi

python-deps:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
	  python3 -m pip install --quiet uv
	@cd $(ROOT) && $(UV) sync --all-groups --all-extras --frozen --quiet --compile-bytecode

node-deps:
	@if [ ! -x "$(DATAMOVER_AZURITE)" ]; then \
	  echo "installing azurite (npm)"; \
	  npm install --silent --no-audit --no-fund --prefix $(TOOLS) azurite@$(AZURITE_VERSION) >/dev/null; \
	fi

# Lint first: a style or import-boundary slip fails fast, before the servers start.
test: setup check
	cd $(ROOT) && $(UV) run --frozen pytest $(PYTEST_ARGS)

# What CI enforces besides the tests: ruff's lint and format (tests/unit/
# test_architecture.py, run by pytest, checks the import boundaries).
check: python-deps
	cd $(ROOT) && $(UV) run --frozen ruff check $(PY_SOURCES) && \
	  $(UV) run --frozen ruff format --check $(PY_SOURCES)

demo: setup
	cd $(ROOT) && $(UV) run --frozen python scripts/demo.py

lint: check
	cd $(ROOT) && $(UV) run --frozen mypy

bench: setup
	cd $(ROOT) && $(UV) run --frozen python bench/run.py

# pjdfstest (pjd/pjdfstest) is not vendored, fetched or built here: PJDFSTEST must
# point at a built tree (the pjdfstest binary beside its tests/), by default
# .tools/pjdfstest; bench/RESULTS.md names the commit of the recorded baseline.
# Without it the runner says so and exits 2. Test failures exit 0 (a measurement);
# 1 means the harness broke, 3 that the overall timeout cut the run short.
PJDFSTEST ?= $(TOOLS)/pjdfstest
CONFORMANCE_ARGS ?= --target datamover --target s3fs

conformance-deps: system-deps python-deps
	@if ! command -v prove >/dev/null || ! command -v s3fs >/dev/null; then \
	  echo "installing perl (prove), s3fs"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq perl s3fs >/dev/null; \
	fi

conformance: conformance-deps
	cd $(ROOT) && $(UV) run --frozen python scripts/conformance/pjdfstest.py \
	  --pjdfstest "$(PJDFSTEST)" $(CONFORMANCE_ARGS)

clean:
	rm -rf $(TOOLS) .pytest_cache .mypy_cache .ruff_cache demo-output
