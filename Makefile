# Two commands matter: `make demo` (the main job) and `make test` (the test-suite).
# Each builds its own virtual environment in .venv on first use.
PYTHON ?= $(shell command -v python3.12 || command -v python3.13 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= results/demo

.PHONY: demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "Python >= 3.12 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/mtbkd demo --out $(OUT)

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests models notebooks

clean:
	rm -rf $(VENV) results
