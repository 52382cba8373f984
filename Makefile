# qcompile: the two entry points the README starts with.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow tune-logs clean

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

## Regenerate the shipped tuning databases (tune_logs/<family>/<model>/), one model at a time.
## Slow (minutes per model); a rerun continues each database up to its trial count.
TUNE_FAMILY ?= x86-avx512-vnni
TUNE_TRIALS_PER_TASK ?= 8
tune-logs: setup
	for m in resnet18 mobilenet_v2 mobilenet_v3_small bert_ffn; do \
	  $(BIN)/qcompile tune zoo:$$m --target $(TUNE_FAMILY) --trials-per-task $(TUNE_TRIALS_PER_TASK) \
	    --trials-per-iter 8 --work-dir tune_logs/$(TUNE_FAMILY)/$$m || exit 1; \
	done

clean:
	rm -rf $(VENV) *.egg-info
