# The two commands a newcomer needs: `make demo` and `make test` (both set up first).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DR     := $(VENV)/bin/directrec
STAMP  := $(VENV)/.setup-done
DEMO   ?= out/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# Idempotent: re-runs only when pyproject.toml changes. torch is installed first and pinned
# so pip takes the CPU wheel on disk; recbole is installed without its dependencies because
# we read only the MovieLens-100K files it ships.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

demo: setup
	$(DR) ingest --dataset ml-100k --db $(DEMO)/ml100k.duckdb
	$(DR) benchmark --db $(DEMO)/ml100k.duckdb --models pop,itemknn,userknn,content,ease,als,bpr,multvae,cfgan --split loo --k 10,20 --out $(DEMO)/bench
	$(DR) train ease --db $(DEMO)/ml100k.duckdb --out $(DEMO)/models/ease
	$(DR) recommend --model $(DEMO)/models/ease --db $(DEMO)/ml100k.duckdb --user 1 --k 10

test: setup
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
