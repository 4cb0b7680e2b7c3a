# datamover: everything a fresh machine needs is installed by these targets.
#   make demo   install, start local servers, copy to a bucket and back, verify
#   make test   install and run the whole test suite (real local servers, real FUSE)
#   make bench  side-by-side benchmarks (see bench/README.md)

SHELL := /bin/bash
.DEFAULT_GOAL := help
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS := $(ROOT)/.tools
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

export DATAMOVER_AZURITE := $(TOOLS)/node_modules/.bin/azurite-blob
# Never let a CA bundle meant for another proxy break local HTTP servers.
unexport AWS_CA_BUNDLE

.PHONY: help setup system-deps python-deps node-deps test demo lint bench clean

help:
	@echo "make demo   - install, start local servers, run a real transfer + verify"
	@echo "make test   - install and run the whole test suite"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - side-by-side benchmarks"

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
	@cd $(ROOT) && $(UV) sync --all-groups --frozen --quiet --compile-bytecode

node-deps:
	@if [ ! -x "$(DATAMOVER_AZURITE)" ]; then \
	  echo "installing azurite (npm)"; \
	  npm install --silent --no-audit --no-fund --prefix $(TOOLS) azurite@3 >/dev/null; \
	fi

test: setup
	cd $(ROOT) && $(UV) run --frozen pytest $(PYTEST_ARGS)

demo: setup
	cd $(ROOT) && $(UV) run --frozen python scripts/demo.py

lint: python-deps
	cd $(ROOT) && $(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check datamover && $(UV) run --frozen mypy

bench: setup
	cd $(ROOT) && $(UV) run --frozen python bench/run.py

clean:
	rm -rf $(TOOLS) .pytest_cache .mypy_cache .ruff_cache demo-output
