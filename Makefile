# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# jemalloc, when installed (Debian: libjemalloc2), hands the memory of a busy spell back
# to the system; the Docker image and the benchmarks set it up the same way
# (docs/operations.md, "Memory"). JEMALLOC= runs on CPython's own allocator.
JEMALLOC      ?= $(firstword $(wildcard /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2))
JEMALLOC_CONF := background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0
MALLOC_ENV    := $(if $(JEMALLOC),LD_PRELOAD=$(JEMALLOC) PYTHONMALLOC=malloc MALLOC_CONF=$(JEMALLOC_CONF))

.PHONY: run test lint typecheck bench bench-compare bench-store wheel clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: venv ## start the web UI on http://localhost:8080 (SQLite store in ./data)
	env $(MALLOC_ENV) $(BIN)/chatbot web

test: venv ## the whole suite: lint, Dockerfile lint, type check, unit, integration, browser
	$(BIN)/ruff check chatbot tests bench
	$(BIN)/hadolint --no-color --failure-threshold warning Dockerfile
	$(BIN)/mypy chatbot
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check chatbot tests bench

typecheck: venv
	$(BIN)/mypy chatbot

bench: venv ## gateway overhead vs a direct call to the same fake upstream
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-compare: venv ## the same scenarios side by side with the LiteLLM proxy (each step twice)
	$(BIN)/python -m bench.run --compare-litellm --repeat 2 $(BENCH_ARGS)

bench-store: venv ## list/load latency as the store grows (SQLite, PostgreSQL)
	$(BIN)/python -m bench.store $(BENCH_ARGS)

wheel: venv
	$(BIN)/python -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache
