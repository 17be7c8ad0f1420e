# The two commands a newcomer needs: `make demo` and `make test` (both set up first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DR     := $(VENV)/bin/directrec
STAMP  := $(VENV)/.setup-done
DEMO   ?= out/demo
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint bench-tools clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch is installed first and pinned
# so pip takes the CPU wheel on disk; recbole is installed without its dependencies because
# we read only the MovieLens-100K files it ships. Chromium (for the web page's browser
# test), PostgreSQL (the store's second backend, tested against a real server) and Redis
# (the event log `directrec stream` consumes, tested against a real server) come from Debian.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	command -v chromium >/dev/null 2>&1 || $(SUDO) apt-get install -y -q --no-install-recommends chromium \
	    || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends chromium)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || $(SUDO) apt-get install -y -q --no-install-recommends postgresql \
	    || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends postgresql)
	command -v redis-server >/dev/null 2>&1 || $(SUDO) apt-get install -y -q --no-install-recommends redis-server \
	    || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends redis-server)
	touch $(STAMP)

# The generative ID head trains by its default recipe (`directrec recipes show sasrec-ce`):
# early stopping on validation, no wall-clock budget. The benchmark keeps what it fitted, so
# the demo's lists come from the very model its table reports (trained once).
demo: setup
	$(DR) ingest --dataset ml-100k --db $(DEMO)/ml100k.duckdb
	$(DR) benchmark --recipe sasrec-ce --db $(DEMO)/ml100k.duckdb --out $(DEMO)/bench \
	    --models pop,itemknn,userknn,content,ease,als,bpr,multvae --save-models $(DEMO)/models
	$(DR) recommend --model $(DEMO)/models/sasrec-ce --db $(DEMO)/ml100k.duckdb --user 1 --k 10

test: setup
	$(VENV)/bin/pytest -q

# What the benchmarks need beyond setup: Debian's compiled HTTP load generator (bench/serve.py wrk).
bench-tools: setup
	command -v wrk >/dev/null 2>&1 || $(SUDO) apt-get install -y -q --no-install-recommends wrk \
	    || ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends wrk)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
