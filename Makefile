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

# Every suite, in the order that reuses work: e2e takes the bundle that the
# bundle env built.
SUITES ?= lint,unit,integration,bundle,e2e,storage

test: venv
	$(SUDO) tools/prepare-test-host.sh
	$(SUDO) $(VENV)/bin/tox run -e $(SUITES)
