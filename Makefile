# `make demo` and `make test` work on a fresh machine: they build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

# The reference libraries and the optional extras the tests cover (Ray Data).
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[test,ray]"
	touch $(TEST_STAMP)

# Browser tests drive Debian's Chromium (no browser download: everything is local). A failed
# install stops `make test` here: a suite run without the browser would report less than it claims.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -q
	apt-get install -y -q chromium

.PHONY: setup demo test
setup: $(TEST_STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/bertforge demo

test: $(TEST_STAMP) $(CHROMIUM)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)
