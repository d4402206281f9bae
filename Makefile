# Every target creates .venv on first use and installs what it needs from the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-unit lint bench clean check-terraform

$(STAMP): pyproject.toml setup.py pipeline/format/_s2block.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jsarchive demo --dir jsarchive-demo

# Four workers even on two cores: the suite mostly waits on the servers it starts (19 min in one process, 8 in four).
TEST_WORKERS ?= 4
test: $(STAMP)
	$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS)
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -ra -m unit

# Hypothesis against every parser of archive bytes and every command that reads an archive (tests/test_fuzz.py):
# random (not the suite's fixed examples) and JSARCHIVE_FUZZ_EXAMPLES per target. Prints examples/s per target.
.PHONY: fuzz
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	JSARCHIVE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check pipeline sinks tests benchmarks
	$(BIN)/ruff format --check pipeline sinks tests benchmarks
	$(BIN)/lint-imports --no-cache

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_start.py
	$(BIN)/python benchmarks/bench_incremental.py --gib 1 --pct 1
	# S3 over a shaped link (network namespace + tc; needs root): exits 3 and measures nothing without them
	$(BIN)/python benchmarks/bench_s3_link.py --gib 0.5 --link-mbit 400
	$(BIN)/python benchmarks/bench_wan.py --rtt 0,25,50,100 --mib 64 --link-mbit 1000

# terraform fmt/init/validate (AWS, offline from the provider mirror), python-hcl2 + checkov (GCP): needs terraform;
# its Python tools go into their own venvs under .cache/tfcheck, not into .venv.
check-terraform:
	bash terraform/check.sh

clean:
	rm -rf $(VENV) jsarchive-demo .cache .pytest_cache
