# The few entry points people type. The scripts do the real work so CI and humans run the
# same thing.
.DEFAULT_GOAL := help
.PHONY: help run test lint fmt bench

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-6s %s\n", $$1, $$2}'

run: ## Serve on development defaults (SQLite, http://127.0.0.1:8000)
	./scripts/run

test: ## Lint gates + the whole suite against real services (pass ARGS="-k foo")
	./scripts/test $(ARGS)

lint: ## ruff check, ruff format --check, mypy --strict
	uv run ruff check src tests
	uv run ruff format --check src tests
	uv run mypy src

fmt: ## Format and auto-fix
	uv run ruff format src tests
	uv run ruff check --fix src tests

bench: ## Throughput benchmarks (see benchmarks/README.md)
	uv run python benchmarks/run.py
