# The two commands: `make run` and `make test`. Everything else is a step of theirs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ENVSH  := set -a; . .run/services.env; set +a

.PHONY: run test install services stop-services lint bench sample-data

# The client library (client/, its own distribution) first: the sidecar depends on it.
$(STAMP): pyproject.toml client/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e './client[hiredis,metrics]'
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

services: install
	bash scripts/services.sh start

stop-services:
	bash scripts/services.sh stop

# The sample analytics table ends in 2025: its months up to now and ahead are added at once,
# not at beat's next daily run (until then `primer-cache status` reports it).
sample-data: services
	$(ENVSH); $(PY) scripts/sample_data.py && $(VENV)/bin/primer-cache partitions ensure

run: sample-data
	$(ENVSH); PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/honcho start

test: services
	$(ENVSH); $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: services
	$(ENVSH); $(PY) -m bench $(BENCH_ARGS)
