# The README's two commands: `make demo` (main job) and `make test` (the suite). Both set up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-test demo test lint bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh test

demo: setup
	$(VENV)/bin/vipann demo --out vipann-demo

test: setup-test
	$(PY) -m ruff check vipann tests benchmarks finetune
	$(PY) -m pytest -q

lint: setup-test
	$(PY) -m ruff check vipann tests benchmarks finetune
	$(PY) -m ruff format --check vipann tests benchmarks finetune

bench: setup-test
	$(PY) benchmarks/run_all.py
