# Two commands set up a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch==2.13.0 resolves to the local CPU build on this project's machines. On Linux without an NVIDIA driver
# (no nvidia-smi), PyTorch's CPU-only wheel index is added, so pip does not fetch the multi-GB CUDA build from
# PyPI: torch 2.13.0+cpu wins over 2.13.0, and as an extra index it leaves local wheels resolvable. A machine
# that cannot resolve that index's host (offline, local wheels only) does not get it: pip would retry it for
# every package. Override for a CUDA build, e.g.
# `make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" venv`.
CPU_INDEX  := https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0$(if $(filter Linux,$(shell uname -s)),$(if $(shell command -v nvidia-smi 2>/dev/null),,$(if $(shell $(PYTHON) -c "import socket; socket.setdefaulttimeout(3); socket.getaddrinfo('download.pytorch.org', 443)" 2>/dev/null && echo reachable), --extra-index-url $(CPU_INDEX))))

.PHONY: notebooks venv sandbox demo test test-fast lab instructor-lab release learner-package bench clean

venv: $(VENV)/.installed sandbox

# Learner code is graded inside bubblewrap (Linux namespaces). Installed from the system's packages when
# this machine allows it (root with apt); otherwise grading still works, unsandboxed, and says so.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (the grading sandbox)"; \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q bubblewrap >/dev/null; }; \
	  else \
	    echo "NOTE: bubblewrap (bwrap) is not installed, so notebooks will be graded UNSANDBOXED here."; \
	    echo "      On Debian/Ubuntu: sudo apt-get install bubblewrap"; \
	  fi; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing PostgreSQL (the tests start a server for the class gradebook)"; \
	    apt-get install -y -q postgresql >/dev/null 2>&1 || true; \
	  fi; }

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	@# jsonschema's optional IRI format checker (rfc3987-syntax, from jupyter-events' format-nongpl extra) builds
	@# ~35 Earley parsers on import: 1.5 s at every start of nbformat, so of every nbgrader and bncourse command.
	@# No Jupyter or nbgrader schema uses the iri formats (python-jsonschema/jsonschema#1428); jsonschema skips
	@# them when the package is absent.
	$(PY) -m pip uninstall -y -q rfc3987-syntax
	touch $@

demo: venv
	$(VENV)/bin/bncourse demo

# Two pytest workers (pytest-xdist), each given whole test files (a module's fixtures, e.g. the red-team
# campaign, run once): grading runs keep both cores busy, but startups, nbgrader commands and in-process tests
# are single-threaded; with two workers this 2-core machine is no longer idle a fifth of the time.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadfile

test: venv
	$(PYTEST) --durations=15

test-fast: venv
	$(PYTEST) -m "not slow"

# A learner's Lab: the notebooks are copied once into workspace/ (yours; no command overwrites it) and
# JupyterLab opens there without nbgrader's instructor tools.
lab: venv
	$(VENV)/bin/bncourse start

# The instructor's Lab at the course root: formgrader, create-assignment toolbar, course list.
instructor-lab: venv
	$(VENV)/bin/jupyter lab

learner-package: venv
	$(VENV)/bin/bncourse learner-package dist/bncourse-learner
	tar -C dist -czf dist/bncourse-learner.tar.gz bncourse-learner

release: venv
	$(VENV)/bin/bncourse release

# Every solution notebook in full (experiments at their real size), one after the other; each writes the
# results its module page quotes (course/modules/<assignment>.results.json, with the run time) and the
# page's results block. Tens of minutes on a 2-core CPU; `make test` runs the same notebooks in quick mode.
notebooks: venv
	@for nb in solutions/*/*.ipynb; do a=$$(basename $$(dirname $$nb)); \
	  env -u BNCOURSE_QUICK $(PY) -m cases.report $$nb course/modules/$$a.md || exit 1; done

bench: venv
	$(PY) -m bench.run

clean:
	rm -rf .demo gradebook.db submitted autograded feedback release exchange dist
