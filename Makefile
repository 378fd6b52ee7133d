# Two entry points: `make demo` and `make test`. Each creates .venv from python3 if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[test,demo,dask,threads,onnx]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -m npconv train

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The documented benchmark command: OpenBLAS picks its own kernels (docs/algorithms.md, "Measuring").
# Writes all of docs/benchmarks.md in one run (about half an hour); BENCH_ARGS=--quick: smoke run.
bench: $(VENV)/.installed
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(BIN)/python -m pip install -q ruff mypy
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build src/*.egg-info
