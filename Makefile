# imnet64 — one Makefile for install, demo, tests and benchmarks.
# Each step leaves a stamp in .venv so re-running `make install` is quick and changes nothing.
SHELL        := /bin/bash
PYTHON       ?= python3
# STACK=pinned (default): TF 2.18.1 + Horovod 0.28.1 in .venv (requirements/runtime.txt).
# STACK=current: the newest TF + tf-keras in .venv-current, no Horovod, so no MPI or
# compilers either (requirements/current.txt; issue 18).
STACK        ?= pinned
ifeq ($(STACK),pinned)
VENV         := .venv
PY_VERSIONS  := (3,9),(3,10),(3,11),(3,12)
else ifeq ($(STACK),current)
VENV         := .venv-current
PY_VERSIONS  := (3,10),(3,11),(3,12),(3,13)
else
$(error STACK=$(STACK): not one of pinned, current)
endif
BIN          := $(VENV)/bin
STACK_REQS   := requirements/$(if $(filter current,$(STACK)),current,runtime).txt
# What the project's install waits for: Horovod built and checked (pinned), or the pip
# stack alone (current).
ENGINE_STAMP := $(if $(filter pinned,$(STACK)),$(VENV)/.stamp-horovod,$(VENV)/.stamp-python)
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test test-fast lint bench clean-venv

install: $(VENV)/.stamp-project

$(VENV)/.stamp-system: scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	@mkdir -p $(VENV) && touch $@

# The pip steps (pins, the offline teacher's weights, Horovod's build flags) live in
# scripts/install-python-deps.sh, which the Dockerfile runs too. The Debian packages are
# Horovod's build needs: the current stack has no Horovod and skips them. The venv's own
# .gitignore makes git, and so ruff, skip it whatever its name (Python 3.13's venv does so).
$(VENV)/.stamp-python: $(STACK_REQS) requirements/dev.txt scripts/install-python-deps.sh | $(if $(filter pinned,$(STACK)),$(VENV)/.stamp-system)
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ($(PY_VERSIONS)), "imnet64 on STACK=$(STACK) needs Python $(PY_VERSIONS)"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	echo '*' > $(VENV)/.gitignore
	$(BIN)/pip install -q --upgrade pip
	STACK=$(STACK) PYTHON=$(BIN)/python scripts/install-python-deps.sh runtime -r requirements/dev.txt
	touch $@

$(VENV)/.stamp-horovod: $(VENV)/.stamp-python
	# Built against the TensorFlow installed above; fails unless it has TensorFlow, MPI, Gloo.
	PYTHON=$(BIN)/python scripts/install-python-deps.sh horovod
	touch $@

$(VENV)/.stamp-project: $(ENGINE_STAMP) pyproject.toml
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The main job on the embedded demo data: real photos, the offline teacher, 2 label shards,
# TFRecord shards, training on 2 ranks (Horovod; tf.distribute on a stack without it),
# evaluation and export (2 min 14 s after the install on 2 cores of an AVX-512 EPYC; the
# README's table has the machines it was timed on).
DEMO_DIR ?= imnet64-demo
demo: install
	$(BIN)/imnet64 demo --workdir $(DEMO_DIR)

# Every benchmark, side by side in one run: bench/results.json and bench/results.md.
bench: install
	$(BIN)/python bench/run_all.py --out bench

# shellcheck (a Debian package) lints the shell scripts; the tests run it too.
lint: install
	scripts/install-system-deps.sh shellcheck
	$(BIN)/ruff check .
	shellcheck slurm/*.sh scripts/*.sh

# Every tier: unit, slow, slurm in pytest; then the current stack (make install
# STACK=current: the newest TF, no Horovod) runs the unit tier and its engine's slow tests, with
# TensorFlow's oneDNN kernels off (TF's own default on CPUs without AVX-512 VNNI/BF16,
# AVX-VNNI or AMX; imnet64 turns them on unless TF_ENABLE_ONEDNN_OPTS says otherwise), so that
# a machine that has them still runs the suite the way such a CPU would; there the
# Horovod-only tests skip with a reason and --engine tf runs everything else. Then the
# container tier through scripts/container-test.sh, which also lints the Dockerfile and the
# translated apptainer.def and builds the image from that translation before it runs
# tests/test_container.py.
CURRENT_BIN  := .venv-current/bin
# The current stack's slow tier is its engine end to end (2 tf.distribute ranks: agreement,
# signals, resume; the cluster from TF_CONFIG and Slurm): what a newer TF breaks first. The
# rest of the slow tier runs on the pinned stack only, to keep CI's time bounded (2026-12-04,
# AMD EPYC Zen 4, 2 cores: the pinned tier alone took about 30 min of pytest).
CURRENT_SLOW := tests/test_engines.py tests/test_tf_world.py
test: install
	scripts/install-system-deps.sh shellcheck
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q --durations=30 -m "not container"
	$(MAKE) install STACK=current
	TF_ENABLE_ONEDNN_OPTS=0 $(CURRENT_BIN)/pytest -q --durations=15 -m "not slow and not slurm and not container"
	TF_ENABLE_ONEDNN_OPTS=0 $(CURRENT_BIN)/pytest -q --durations=15 -m "slow" $(CURRENT_SLOW)
	scripts/container-test.sh

test-fast: install
	$(BIN)/pytest -q -m "not slow and not slurm and not container"

# The slurm/ templates on a real Slurm: munged, slurmctld and two slurmd (node1, node2) on
# this host, started and stopped by the tests (needs root; docs/slurm.md). slurm-up/down
# keep one running between runs: `eval "$$(scripts/slurm-local.sh env)"` then use sbatch.
.PHONY: slurm-test slurm-up slurm-down
slurm-test: install
	$(BIN)/pytest -q -m slurm
slurm-up:
	scripts/slurm-local.sh start
slurm-down:
	scripts/slurm-local.sh stop

# ---- containers (docs/containers.md) ----------------------------------------------------
# ENGINE: podman if installed, else docker. podman keeps SHELL and RUN --mount only in the
# docker image format. Behind a TLS-intercepting proxy, PIP_CERT (a CA bundle) is handed to
# pip inside the build as a secret (not stored in the image). BUILD_FLAGS: e.g. --pull=never.
ENGINE       ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE        ?= imnet64
BUILD_FLAGS  ?=
# recorded by every output made in the image (IMNET64_IMAGE_ID, imnet64/cluster/provenance.py)
IMAGE_ID     ?= $(IMAGE)-0.1.0-$(shell git describe --always --dirty 2>/dev/null || echo nogit)
comma        := ,
IMAGE_FLAGS   = $(if $(filter podman,$(notdir $(ENGINE))),--format docker) \
                $(if $(PIP_CERT),--secret id=pip_cert$(comma)src=$(PIP_CERT)) \
                --build-arg STACK=$(STACK) $(BUILD_FLAGS)
# STACK=current: imnet64:current and imnet64:cpu-current beside the pinned :latest and :cpu
STACK_TAG    := $(if $(filter current,$(STACK)),-current)
GPU_TAG      := $(if $(filter current,$(STACK)),current,latest)

.PHONY: image image-cpu sif container-test

image:  ## the default image: GPU, Horovod over NCCL
	$(ENGINE) build $(IMAGE_FLAGS) --build-arg IMAGE_ID=$(IMAGE_ID)-gpu$(STACK_TAG) \
	  -t $(IMAGE):$(GPU_TAG) .

image-cpu:  ## the CPU variant (what CI builds and runs)
	$(ENGINE) build $(IMAGE_FLAGS) --build-arg VARIANT=cpu \
	  --build-arg IMAGE_ID=$(IMAGE_ID)-cpu$(STACK_TAG) -t $(IMAGE):cpu$(STACK_TAG) .

sif:  ## imnet64$(STACK_TAG).sif for Apptainer from $(IMAGE):$(GPU_TAG) (needs apptainer)
	ENGINE=$(ENGINE) scripts/build-sif.sh $(IMAGE):$(GPU_TAG) imnet64$(STACK_TAG).sif

container-test: install  ## lint, build the CPU image with podman, run the demo in it
	scripts/container-test.sh

clean-venv:
	rm -rf $(VENV)
