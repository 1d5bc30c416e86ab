# Two entry points for a fresh clone:
#   make demo   train the Bayesian CNN on scikit-learn's digits
#   make test   run the whole suite on TensorFlow, JAX and PyTorch
# Both create .venv on first use. Pick the demo's backend with
# `make demo KERAS_BACKEND=jax` (tensorflow, jax or torch).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERAS_BACKEND ?= tensorflow

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml requirements-dev.txt requirements-peers.txt \
		constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt \
		-r requirements-dev.txt -e ".[test]"
	$(PY) -m pip install --quiet --no-deps -c constraints.txt \
		-r requirements-peers.txt
	touch $(STAMP)

demo: $(STAMP)
	KERAS_BACKEND=$(KERAS_BACKEND) $(PY) examples/digits_bayesian_cnn.py

test: $(STAMP)
	$(PY) tests/run_all_backends.py

lint: $(STAMP)
	$(VENV)/bin/ruff check keras_bayes tests examples benchmarks
	$(VENV)/bin/ruff format --check keras_bayes tests examples benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) .test-logs
