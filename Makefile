# qcompile: the two entry points the README starts with.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow clean

$(BIN)/qcompile: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

setup: $(BIN)/qcompile

## Compile the built-in ResNet-18, verify it against PyTorch fbgemm, print the report.
demo: setup
	$(BIN)/qcompile demo

## The default test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -q

## Long runs: full-size zoo models under every contract.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) *.egg-info
