# Two commands on a fresh machine:
#   make book   builds the website into _build/html from the notebooks' committed outputs
#               (make book EXECUTE=1 re-executes every notebook while building)
#   make test   unit tests, nbval strict over every notebook, the book with -W, a browser test,
#               and cnnlib on the oldest versions it allows (make lower)
# Each creates the virtual environment it needs (.venv) from requirements.txt.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Compiled XLA programs are cached on disk: notebooks and tests re-use them across runs.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0
export PYTHONHASHSEED := 0
export PYDEVD_DISABLE_FILE_VALIDATION := 1

NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb))
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
# Test processes (pytest-xdist) and notebooks run at a time. Two on CI's two cores finish
# sooner than one (measured from a cold compile cache: unit tests 4.2 min instead of 6.5,
# nbval 5.6 instead of 7.6, the lower chapters 6.6 instead of 10.6): compiling is
# single-threaded, and small convolutions leave a core idle. Outputs do not change: XLA sizes
# its thread pool by the cores, not by the load.
JOBS ?= 2
# Chapter 08 times code and asserts on the timings (compiling costs more than ten steps, with
# a margin of about eight on a quiet machine). A second kernel on the same two cores can slow
# a multi-threaded step tenfold, so this chapter runs alone, after the others.
TIMED := notebooks/08-performance-and-scaling.ipynb
SHARED := $(filter-out $(TIMED),$(NOTEBOOKS))

.PHONY: help venv book html test unit nbval book-strict browser lower notebooks bench clean

help:
	@echo "make book       build the book into _build/html from the committed outputs"
	@echo "                (EXECUTE=1: re-execute every notebook while building)"
	@echo "make test       unit tests + nbval strict + book build with -W + browser test + lower"
	@echo "make lower      unit tests and every chapter on the oldest jax/numpy cnnlib allows"
	@echo "make notebooks  re-execute and save every notebook in place (commit the result)"
	@echo "make bench      run the benchmark scripts in benchmarks/"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# EXECUTE=1 builds from a copy of _config.yml with `execute_notebooks: force` (jupyter-book 1 has
# no command-line override). The copy sits beside the original, so relative paths resolve alike,
# and is removed afterwards.
book: $(STAMP)
ifeq ($(EXECUTE),1)
	sed 's/^  execute_notebooks: .*/  execute_notebooks: force/' _config.yml > _config.execute.yml
	grep -q '^  execute_notebooks: force$$' _config.execute.yml
	$(VENV)/bin/jupyter-book build . --all --keep-going --config _config.execute.yml; \
	    status=$$?; rm -f _config.execute.yml; exit $$status
else
	$(VENV)/bin/jupyter-book build . --all --keep-going
endif
	@echo
	@echo "The book is built. Open: file://$(CURDIR)/_build/html/index.html"

# What CI runs. Each step fails the target on the first error. The notebooks are executed once,
# by nbval (strict: every output must equal the committed one); book-strict then builds the site
# from those committed outputs, with -W (a warning fails the build).
test: unit nbval book-strict browser lower

unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser" -p no:cacheprovider -q -n $(JOBS)

nbval: $(STAMP)
	$(PY) -m pytest $(NBVAL) $(SHARED) -p no:cacheprovider -q -n $(JOBS) --dist loadfile
	$(PY) -m pytest $(NBVAL) $(TIMED) -p no:cacheprovider -q

book-strict: $(STAMP)
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . -W --all --keep-going

browser: $(STAMP)
	$(PY) -m pytest tests/test_site.py -m browser -p no:cacheprovider -q

# cnnlib on the oldest versions pyproject.toml allows (requirements-lower.txt, .venv-lower): the
# unit tests, then every chapter top to bottom, outputs not compared (numbers may differ; a cell
# that raises fails, unless tagged raises-exception). Tests that need the book environment
# (PyYAML, the built site) run in `make unit` only. A compile cache of its own: jaxlib
# versions must not share one. Property tests take the "dev" profile (50 examples, not CI's
# 500): their breadth is `make unit`'s job; here the question is whether the old APIs work.
# The chapters start last first: the long ones are 03-07, so both kernels stay busy to the end.
LOWER_VENV ?= .venv-lower
LOWER_PY := $(LOWER_VENV)/bin/python
LOWER_STAMP := $(LOWER_VENV)/.installed
LOWER_ENV := JAX_COMPILATION_CACHE_DIR=$(JAX_COMPILATION_CACHE_DIR)-lower

$(LOWER_STAMP): requirements-lower.txt pyproject.toml
	test -x $(LOWER_PY) || $(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_PY) -m pip install --quiet --upgrade pip
	$(LOWER_PY) -m pip install --quiet -r requirements-lower.txt
	$(LOWER_PY) -m pip install --quiet --no-deps -e .
	touch $@

lower: $(LOWER_STAMP)
	$(LOWER_ENV) HYPOTHESIS_PROFILE=dev $(LOWER_PY) -m pytest tests -m "not browser" \
	    -p no:cacheprovider -q -n $(JOBS) --ignore=tests/test_notebooks.py \
	    --ignore=tests/test_site.py
	$(LOWER_ENV) $(LOWER_PY) tools/execute.py --no-save --jobs $(JOBS) \
	    $(shell printf '%s\n' $(SHARED) | sort -r)
	$(LOWER_ENV) $(LOWER_PY) tools/execute.py --no-save $(TIMED)

# Re-execute notebooks in place after changing them or cnnlib; commit the outputs.
notebooks: $(STAMP)
	$(PY) tools/execute.py $(if $(NB),$(NB),$(NOTEBOOKS))

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_resnet_step.py
	$(PY) benchmarks/bench_multiprocess.py
	$(PY) benchmarks/bench_eval_batch.py
	$(PY) benchmarks/bench_init.py
	$(PY) benchmarks/fashion_mnist_results.py --models cnn mlp vgg-bn

clean:
	rm -rf _build .cache .pytest_cache .hypothesis
