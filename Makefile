# Two commands matter: `make demo` (the main job) and `make test` (the test-suite); CI also
# runs `make typecheck` (mypy on src/) and `make docs` (the API reference, warnings as errors).
# Each builds its own virtual environment in .venv on first use.
PYTHON ?= $(shell command -v python3.12 || command -v python3.13 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= results/demo

.PHONY: demo test lint typecheck docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "Python >= 3.12 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

# OUT is make demo's own folder: --overwrite replaces an earlier run's outputs there (after an
# upgrade, or a smoke run, they are another run's, which mtbkd otherwise refuses); it removes
# the files mtbkd writes, not others
demo: $(BIN)/.installed
	$(BIN)/mtbkd demo --out $(OUT) --overwrite

# The suite runs in TEST_WORKERS processes (pytest-xdist; each test file stays in one process, so
# its module fixtures run once). Most of a test's time is one thread compiling or driving XLA:
# on 2 cores the a-m half took 2,300 s beside the n-z half, 2,192 s alone (CI, one after the
# other, passed 5,400 s in all). Each worker is its own clean slate: XLA's
# compiler segfaulted late in a long run once every compiled program's memory mappings reached
# Linux's vm.max_map_count (65,530); tests/conftest.py releases them after each test module.
# TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile src/mtbkd_jax tests

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests models notebooks benchmarks
	$(BIN)/ruff format --check src tests models benchmarks

# settings in pyproject.toml, [tool.mypy]
typecheck: $(BIN)/.installed
	$(BIN)/mypy src

# offline; MTBKD_DOCS_INTERSPHINX=1 links to Python/NumPy/JAX/NumPyro docs (fetches inventories)
docs: $(BIN)/.installed
	$(BIN)/sphinx-build -W --keep-going -b html docs/api docs/_build/html

clean:
	rm -rf $(VENV) results docs/_build
