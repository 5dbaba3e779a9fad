# Two commands do all the set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench checks datasette clean venv

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
	$(BIN)/ruff format --check aggregator tests benchmarks
	$(BIN)/mypy aggregator
	$(BIN)/lint-imports

# Benchmarks print figures (see the README's table); `make bench` runs the headline one.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/ingest.py

# The issues' outside checks (#3 hostile server, #4 corpus): real CLI polls, PASS/FAIL + figures.
checks: $(STAMP)
	$(BIN)/python benchmarks/hostile_poll_check.py
	$(BIN)/python benchmarks/corpus_poll_check.py

# Datasette on loopback over a config's database (default: the demo's; run `make demo` first),
# with the bundled metadata keyed to its name: `make datasette CONFIG=config/aggregator.toml`.
CONFIG ?= config/demo.toml
datasette: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,datasette]'
	$(BIN)/aggregator --config $(CONFIG) datasette-metadata -o data/datasette-metadata.json
	$(BIN)/datasette serve --host 127.0.0.1 --port 8001 --metadata data/datasette-metadata.json \
		"$$($(BIN)/python -c 'import sys; from aggregator import config; print(config.load(config.Path(sys.argv[1])).database)' $(CONFIG))"

clean:
	rm -rf $(VENV) data/*.db data/*.db-wal data/*.db-shm data/digests
