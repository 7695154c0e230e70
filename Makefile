# Two commands for a fresh machine (README): `make run` (the default job) and `make test` (the whole suite).
# Both first run scripts/setup.sh, which creates .venv and picks the CPU or CUDA torch route by itself.
.PHONY: setup run test bench
ARGS ?=
PYTEST_ARGS ?=

setup:
	bash scripts/setup.sh

run: setup
	.venv/bin/python -m lec $(ARGS)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

bench: setup
	.venv/bin/python benchmarks/default_run.py
