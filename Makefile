# Developer entry points. Everything runs from the project's virtualenv (.venv), created on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv proto run demo test chaos-short chaos fuzz lint bench bench-execution bench-settlement bench-settlement-sql bench-poison bench-watch clean

venv: $(STAMP)

# Re-installs whenever pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
			|| { echo "Python >= 3.11 is required: make PYTHON=python3.11 ..." >&2; exit 1; }; \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/pip install -e '.[dev]'
	touch $@

proto: venv
	$(BIN)/python -m devtools.protogen

# TLS=1: mutual TLS on every link, with dev certificates made under .local/tls.
run: venv
	$(BIN)/python -m devtools.run $(if $(filter 1,$(TLS)),--tls)

# Against a running `make run`: a few customers buy, then sell part of it; shows them filled and settled.
demo: venv
	$(BIN)/python -m devtools.demo $(if $(filter 1,$(TLS)),--tls)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy brokerage order_service execution_service callback_service operations_service exchange_simulator devtools

test: lint
	$(BIN)/pytest -q
	$(MAKE) chaos-short

# One fixed short seed of the chaos suite (benchmarks/chaos): ~300 orders on clustered engines under mixed faults (the
# NATS stream leader killed, NATS quorum lost, the PostgreSQL primary killed and its standby promoted, ...), the
# invariants checked. Its figures go to .local/chaos-short, not to benchmarks/results.
CHAOS_SHORT_SEED ?= 2
chaos-short: venv
	$(BIN)/python -m benchmarks.chaos --seeds 1 --orders 300 --first-seed $(CHAOS_SHORT_SEED) --results .local/chaos-short

# Seeded runs under mixed faults, the invariants checked after each, figures to benchmarks/results/chaos.md.
CHAOS_SEEDS ?= 10
CHAOS_ORDERS ?= 2000
chaos: venv
	$(BIN)/python -m benchmarks.chaos --seeds $(CHAOS_SEEDS) --orders $(CHAOS_ORDERS)

# Every RPC of every service fed 10,000 hostile requests (tests/integration/test_fuzz_rpcs.py; make test runs a few
# hundred, replayed in a fixed order): only documented status codes, no state changed by a refused call.
fuzz: venv
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-10000} FUZZ_TIMEOUT=3600 $(BIN)/pytest -q -p no:cacheprovider tests/integration/test_fuzz_rpcs.py

bench: venv
	$(BIN)/python -m benchmarks.place_order

bench-execution: venv
	$(BIN)/python -m benchmarks.execution

bench-settlement: venv
	$(BIN)/python -m benchmarks.settlement

bench-settlement-sql: venv
	$(BIN)/python -m benchmarks.settlement_sql

bench-poison: venv
	$(BIN)/python -m benchmarks.poison

bench-watch: venv
	$(BIN)/python -m benchmarks.watch_flood

clean:
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
