# Two commands set up a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 resolves to the local CPU build on this project's machines; override for a CUDA build,
# e.g. `make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" venv`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: venv demo test test-fast lab release bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: venv
	$(VENV)/bin/bncourse demo

test: venv
	$(PY) -m pytest -q

test-fast: venv
	$(PY) -m pytest -q -m "not slow"

lab: venv
	$(VENV)/bin/jupyter lab notebooks/

release: venv
	$(VENV)/bin/bncourse release

bench: venv
	$(PY) -m bench.run

clean:
	rm -rf .demo gradebook.db submitted autograded feedback
