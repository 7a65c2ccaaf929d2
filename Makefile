# Two entry points: `make demo` (the main job) and `make test` (lint + test suite).
# Both create .venv on first use. torch is pinned before the project is installed so that
# the `torch>=2.4` requirement is already met and no other build is pulled. The `dev` extra
# brings every other extra (experiments, slurm, integrations) and the test tools, so `make test`
# also runs the Transformers and Lightning tests (pytest markers `integrations`, `compile`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
export ADAPTOPT_DATA ?= $(abspath .data):$(abspath ../shared/data)

.PHONY: demo test lint typecheck data clean

# setup.py builds the native kernels (native.cpp, with layout.py's ids) into src/ on install.
NATIVE := setup.py src/adaptopt/optim/_fused/native.cpp src/adaptopt/optim/_fused/layout.py
$(VENV)/.installed: pyproject.toml $(NATIVE)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

data:
	@scripts/fetch_fashion_mnist.sh .data || echo "Fashion-MNIST unavailable: tasks needing it explain where to put it."

demo: $(VENV)/.installed data
	$(VENV)/bin/adaptopt demo

# ruff, then mypy over src/adaptopt as configured in pyproject.toml ([tool.mypy])
lint: $(VENV)/.installed
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

typecheck: $(VENV)/.installed
	$(PY) -m mypy

test: lint data
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .data runs
