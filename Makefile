# qcompile: the two entry points the README starts with.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup setup-arm demo test test-slow test-garden test-arm tune-logs clean

$(BIN)/qcompile: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,bench,pt2e,garden,hf]'
	touch $@

setup: $(BIN)/qcompile

## The aarch64 cross toolchain and emulator (the Debian packages the aarch64 machine names in
## schedules/targets/machines.py) and the aarch64 TVM runtime (fetched from PyPI into
## ~/.cache/qcompile): what --target aarch64-*, --emulate and `qcompile package` need.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
setup-arm: setup
	missing="$$($(BIN)/python -m qcompile.schedules.targets missing aarch64)"; \
	  [ -z "$$missing" ] || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q $$missing; }
	$(BIN)/python -m qcompile.deploy.runtime

## Compile the built-in ResNet-18, verify it against PyTorch fbgemm, print the report.
demo: setup
	$(BIN)/qcompile demo

## The default test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -q

## Long runs: full-size zoo models under every contract.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

## The whole model garden (torchvision's quantizable classifiers) at native sizes: compiled,
## bit-exact with fbgemm, compile time; `qcompile garden` prints the table with timings.
test-garden: setup
	$(BIN)/python -m pytest -q -m garden

## Full-size aarch64 models under emulation (both ARM families, qnnpack numerics).
test-arm: setup-arm
	QCOMPILE_REQUIRE_ARM=1 $(BIN)/python -m pytest -q -m arm

## Regenerate the shipped tuning databases (tune_logs/<family>/<model>/), one model at a time:
## TUNE_BUDGET each (an hour for the four).  A model's directory is continued where it holds
## records (its defaults measured where missing): delete it first to start it afresh.
TUNE_FAMILY ?= x86-avx512-vnni
TUNE_BUDGET ?= 15m
tune-logs: setup
	for m in resnet18 mobilenet_v2 mobilenet_v3_small bert_ffn; do \
	  $(BIN)/qcompile tune zoo:$$m --target $(TUNE_FAMILY) --budget $(TUNE_BUDGET) \
	    --trials-per-iter 8 --work-dir tune_logs/$(TUNE_FAMILY)/$$m || exit 1; \
	done

clean:
	rm -rf $(VENV) *.egg-info
