# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo lint test test-system test-all bench clean

$(STAMP): pyproject.toml constraints.txt
	python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly pinned: the CPU build; anything that depends on torch is then satisfied by it
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## demo: install, then on the default scenario (nw-italy): simulate (if missing), train, export, evaluate
demo: $(STAMP)
	$(VENV)/bin/heimdall train
	$(VENV)/bin/heimdall evaluate

## lint: install, then ruff (lint and format check) and mypy, configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

## test: install, then run the first tier of tests (in process, one worker process per logical CPU up to four, each test
## file's tests in one worker; prints the 15 slowest)
test: $(STAMP)
	$(PY) -m pytest -n logical --maxprocesses 4 --dist loadfile

## test-system: the second tier: tests that start servers, several processes, a browser or a long training
test-system: $(STAMP)
	$(PY) -m pytest -m system

## test-all: both tiers
test-all: $(STAMP)
	$(PY) -m pytest -m ''

## bench: install, then seven benchmarks (each prints its figures and the ratio to its target); bench_fit,
## bench_choice and bench_real are run by hand (README.md, Benchmarks)
bench: $(STAMP)
	$(PY) bench/bench_simulate.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_onnx.py
	$(PY) bench/bench_serve.py
	$(PY) bench/bench_map.py
	$(PY) bench/bench_labels.py
	$(PY) bench/bench_import.py

clean:
	rm -rf workspace .pytest_cache
