# The project's commands. Each one sets up what it needs (.venv, pinned requirements) first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: venv browser lint test test-fast demo bench bench-quick airflow screenshots clean

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

# Headless Chromium (Debian's package) for the UI tests; installed once if missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium >/dev/null; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make test: lint + the whole suite (real PostgreSQL and S3 servers started by the tests)
test: lint browser
	$(PY) -m pytest $(PYTEST_ARGS)

## make test-fast: the suite without the tests marked slow
test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

## make demo: the DAG end to end on embedded defaults (throwaway PostgreSQL, local S3, sample data);
## progress bars and a summary on the terminal, Airflow's own logs in logs/demo.log
demo: venv
	$(PY) -m demo $(DEMO_ARGS)

## make bench: side-by-side benchmark; results in bench/results/latest.json
bench: venv
	$(PY) -m bench $(BENCH_ARGS)

bench-quick: venv
	$(PY) -m bench --quick $(BENCH_ARGS)

## make airflow: airflow standalone with the embedded defaults, UI on http://localhost:8080;
## its components' logs in logs/standalone.log, the banner in logs/standalone-banner.txt
airflow: venv
	$(PY) -m demo --standalone $(DEMO_ARGS)

## make screenshots: refresh docs/*.png from a real airflow standalone (headless Chromium)
screenshots: venv browser
	E2E_SCREENSHOT_DIR=docs $(PY) -m pytest tests/e2e/test_standalone.py -k "screenshot or form"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
