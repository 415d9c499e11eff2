# The README's two commands: `make demo` (main job) and `make test` (the suite). Both set up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-test demo test lint bench docs-check

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh test

demo: setup
	$(VENV)/bin/vipann demo --out vipann-demo

test: setup-test
	$(PY) -m ruff check vipann tests benchmarks finetune scripts
	$(PY) -m pytest -q

lint: setup-test
	$(PY) -m ruff check vipann tests benchmarks finetune scripts
	$(PY) -m ruff format --check vipann tests benchmarks finetune scripts

# Every benchmark in quick mode, each ratio against the baseline it measures in the same run.
bench: setup-test
	$(PY) benchmarks/run_all.py

# Every command of README.md and docs/ that can run offline, as written, including the slow ones
# (make demo, vipann compare, vipann example-data at full size) that the suite leaves out.
docs-check: setup-test
	VIPANN_DOCS_CHECK=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_docs.py
