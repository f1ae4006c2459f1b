# Two commands on a fresh machine:
#   make book   builds the website into _build/html (executing every notebook)
#   make test   unit tests, nbval strict over every notebook, the book with -W, a browser test
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

.PHONY: help venv book html test unit nbval book-strict browser notebooks bench clean

help:
	@echo "make book       build the book into _build/html (executes every notebook)"
	@echo "make test       unit tests + nbval strict + book build with -W + browser test"
	@echo "make notebooks  re-execute and save every notebook in place (commit the result)"
	@echo "make bench      run the benchmark scripts in benchmarks/"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --all --keep-going
	@echo
	@echo "The book is built. Open: file://$(CURDIR)/_build/html/index.html"

# What CI runs. Each step fails the target on the first error.
test: unit nbval book-strict browser

unit: $(STAMP)
	$(PY) -m pytest tests -m "not browser" -p no:cacheprovider -q

nbval: $(STAMP)
	$(PY) -m pytest $(NBVAL) $(NOTEBOOKS) -p no:cacheprovider -q

book-strict: $(STAMP)
	rm -rf _build/html
	$(VENV)/bin/jupyter-book build . -W --all --keep-going

browser: $(STAMP)
	$(PY) -m pytest tests/test_site.py -m browser -p no:cacheprovider -q

# Re-execute notebooks in place after changing them or cnnlib; commit the outputs.
notebooks: $(STAMP)
	$(PY) tools/execute.py $(if $(NB),$(NB),$(NOTEBOOKS))

bench: $(STAMP)
	$(PY) benchmarks/bench_ops.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/fashion_mnist_results.py

clean:
	rm -rf _build .cache .pytest_cache .hypothesis
