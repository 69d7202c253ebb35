# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
# Both run the idempotent set-up first.
.PHONY: setup demo test lint bench

setup:
	./scripts/setup.sh

demo: setup
	.venv/bin/flexsfc demo

test: setup
	.venv/bin/ruff check flexsfc tests bench
	.venv/bin/pytest -q -p no:cacheprovider

lint: setup
	.venv/bin/ruff check flexsfc tests bench
	.venv/bin/ruff format --check flexsfc tests bench

bench: setup
	.venv/bin/flexsfc bench
