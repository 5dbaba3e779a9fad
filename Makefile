# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench checks clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aggregator demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check aggregator tests benchmarks

# Benchmarks print figures (see the README's table); `make bench` runs the headline one.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/ingest.py

# The issues' outside checks (#3 hostile server, #4 corpus): real CLI polls, PASS/FAIL + figures.
checks: $(STAMP)
	$(BIN)/python benchmarks/hostile_poll_check.py
	$(BIN)/python benchmarks/corpus_poll_check.py

clean:
	rm -rf $(VENV) data/*.db data/*.db-wal data/*.db-shm data/digests
