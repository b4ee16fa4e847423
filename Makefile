# raysys: `make demo` and `make test` each work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m raysys.demo

test: install
	WANDB_MODE=offline $(BIN)/pytest -q

lint: install
	$(BIN)/ruff check raysys tests benchmarks

bench: install
	$(BIN)/python benchmarks/data_bench.py

clean:
	rm -rf .raysys .pytest_cache
