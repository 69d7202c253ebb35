# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both run the idempotent set-up first (root: Debian packages, bpffs, CNI plugins, the eBPF object).
# `make unit` (the pure tests) and `make lint` need no root: they set up the virtualenv only.
.PHONY: setup venv demo test unit lint bench

VENV := .venv/bin
# The layering contracts and the type check of pyproject.toml; both caches live in the virtualenv.
IMPORT_LINT := $(VENV)/lint-imports --cache-dir .venv/.import_linter_cache
MYPY := $(VENV)/mypy

setup:
	./scripts/setup.sh

venv:
	./scripts/setup.sh --venv-only

demo: setup
	$(VENV)/flexsfc demo

test: setup
	$(VENV)/ruff check flexsfc tests bench
	$(IMPORT_LINT)
	$(MYPY)
	$(VENV)/pytest -q -p no:cacheprovider

unit: venv
	$(VENV)/pytest -q -p no:cacheprovider tests/unit

lint: venv
	$(VENV)/ruff check flexsfc tests bench
	$(VENV)/ruff format --check flexsfc tests bench
	$(IMPORT_LINT)
	$(MYPY)

bench: setup
	$(VENV)/flexsfc bench
