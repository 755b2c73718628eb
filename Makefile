# Everything a fresh machine needs is installed here, into .venv (never by hand).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# test workers (pytest-xdist, a test file per worker, one torch thread each); 0 runs the tests in one process
TEST_WORKERS ?= 2

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@# (this machine's pip config lists local wheel folders; drop its "is ignored" noise)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 \
	  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
	touch $@

demo: setup
	$(VENV)/bin/story demo

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m 'not slow'

bench: setup
	$(PY) bench/retrieval.py
	$(PY) bench/reindex.py
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV)
