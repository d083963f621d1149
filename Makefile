# The README's two commands: `make demo` (main job) and `make test`. Both set themselves up.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo demo-d4rl test lint bench clean

setup:
	@./scripts/setup_env.sh

demo: setup
	$(VENV)/bin/uni-o4 field --sim

demo-d4rl: setup
	$(VENV)/bin/uni-o4 demo

test: setup
	$(PY) -m pytest -q --durations=15 test/

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m pip install --quiet --no-deps d3rlpy==2.8.1 -r requirements-bench.txt
	./benchmarks/run_all.sh

clean:
	rm -rf build runs .pytest_cache
