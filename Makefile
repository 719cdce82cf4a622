# Lead enrichment service — developer commands. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

.PHONY: help install browser run test bench lint clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml constraints.txt client/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]' -e ./client
	touch $(STAMP)

install: $(STAMP) browser ## create .venv with the package, its dev extras and enrichment-client

# The console's browser tests (tests/test_console_browser.py) drive Debian's chromium through its
# chromedriver: installed here when we may (root, apt-get), otherwise named; without them those
# tests skip locally and fail in CI.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
	  echo "note: the browser tests need chromium and chromedriver on PATH;" \
	       "install them as root: apt-get install chromium chromium-driver" >&2; \
	fi

run: $(STAMP) ## migrate, then start API :8000, worker, beat, Flower :5555 and the provider simulator
	$(PY) scripts/run.py

test: $(STAMP) ## the whole test suite on real Redis and PostgreSQL
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP) ## the benchmarks, printed as tables
	$(PY) -m bench

lint: $(STAMP) ## ruff on everything, mypy on the domain core (enrichment/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean: ## remove the virtualenv and run state
	rm -rf $(VENV) .run *.egg-info
