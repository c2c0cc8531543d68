# thresher: `make mnist` prepares MNIST, `make test` runs the test suite. Both create .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RECIPES := mnist cifar10 flowers102 an4 iris ptb celeba imagenet images voc lsun places205
# NAME/VARIANT goals (make voc/2012): any goal with a slash prepares that variant. Make has no
# pattern with two stems, so they are picked out of the command line and declared phony.
VARIANT_GOALS := $(foreach goal,$(MAKECMDGOALS),$(if $(findstring /,$(goal)),$(goal)))
# Extra options for recipe targets, e.g. make mnist ARGS="--format hdf5"
ARGS ?=
# Conversion processes for recipe targets: one per usable core unless told (make imagenet WORKERS=4)
WORKERS ?= auto
# PyTorch is an optional extra. The tests install it only where a CPU build already lies on this
# machine (as on our CI machines); elsewhere the adapter's test is skipped rather than pulling
# gigabytes from the network.
LOCAL_TORCH := $(firstword $(wildcard /opt/wheels/torch-*+cpu-*.whl))
# make interop: NVIDIA DALI (its CPU operators need no GPU or CUDA) and an editable thresher in an
# environment of their own, kept out of .venv because the wheel and its codecs take about 1 GB.
INTEROP_VENV := .venv-interop
INTEROP_STAMP := $(INTEROP_VENV)/.installed
DALI ?= nvidia-dali-cuda120==2.4.0

.PHONY: help venv test lint demo bench interop clean $(RECIPES) $(VARIANT_GOALS)

help:
	@echo "make <recipe>   prepare a dataset into datasets/<recipe>/lmdb ($(RECIPES)); ARGS=... for options,"
	@echo "                WORKERS=N for N conversion processes (default auto: one per usable core)"
	@echo "make images ARGS='--source DIR [--list FILE]'   your own folder of images, into datasets/images/<name>/lmdb"
	@echo "make <recipe>/<variant>   one variant of a recipe with variants, into datasets/<recipe>/<variant>/lmdb"
	@echo "make test       install and run the test suite"
	@echo "make demo       the whole pipeline offline on miniatures served from 127.0.0.1, all formats"
	@echo "make bench      benchmarks (writes docs/performance.md)"
	@echo "make lint       ruff"
	@echo "make interop    NVIDIA DALI (CPU) reads every image recipe's LMDB output (own env, about 1 GB)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(if $(LOCAL_TORCH),$(BIN)/python -m pip install --quiet '$(LOCAL_TORCH)')
	touch $(STAMP)

venv: $(STAMP)

$(RECIPES) $(VARIANT_GOALS): $(STAMP)
	$(BIN)/thresher prepare $@ --workers $(WORKERS) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check thresher recipes tests benchmarks

demo: $(STAMP)
	$(BIN)/python -m thresher.demo demo

bench: $(STAMP)
	$(BIN)/python -m benchmarks

$(INTEROP_STAMP): pyproject.toml
	test -x $(INTEROP_VENV)/bin/python || $(PYTHON) -m venv $(INTEROP_VENV)
	echo '*' > $(INTEROP_VENV)/.gitignore
	$(INTEROP_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INTEROP_VENV)/bin/python -m pip install --quiet '$(DALI)' -e . || \
		{ echo "make interop: pip could not install $(DALI) (error above)" >&2; exit 1; }
	touch $(INTEROP_STAMP)

interop: $(INTEROP_STAMP)
	$(INTEROP_VENV)/bin/python interop/dali_check.py

clean:
	rm -rf $(VENV) build *.egg-info demo
