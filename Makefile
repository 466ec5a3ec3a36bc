# Everything runs from .venv, created on first use with the machine's python3.
# `make run` serves the embedded hotline; `make test` runs the test suite.

PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ./hotline-data
PYTEST_ARGS ?= -q

.PHONY: run test lint migrate clean

# The venv is created only when missing.
.venv/bin/python:
	$(PYTHON) -m venv .venv

# Installs are recorded in stamp files, so a second `make run` starts at once
# (and offline); editing pyproject.toml installs again.
.venv/.installed: pyproject.toml | .venv/bin/python
	.venv/bin/python -m pip install --quiet -e .
	touch $@

.venv/.installed-test: pyproject.toml | .venv/bin/python
	.venv/bin/python -m pip install --quiet -e '.[test]'
	touch $@ .venv/.installed

run: .venv/.installed
	.venv/bin/hotline serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

test: .venv/.installed-test
	.venv/bin/python -m pytest $(PYTEST_ARGS)

lint: .venv/.installed-test
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

migrate: .venv/.installed
	.venv/bin/hotline --data-dir $(DATA_DIR) db upgrade

# Keeps $(DATA_DIR): it holds the reports.
clean:
	rm -rf .venv build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
