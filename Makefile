# The two entry points of the README. Everything else is `minicluster` and `tox`.
#   make up     bring the cluster up (provider from cluster.yaml) and verify it
#   make test   prepare this host and run the whole test suite (needs root or sudo)

VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: up test venv

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

up: venv
	$(VENV)/bin/minicluster up

test: venv
	$(SUDO) tools/prepare-test-host.sh
	$(VENV)/bin/tox
