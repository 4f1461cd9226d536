# `make demo`, `make test` and `make test-all` set everything up on first use, then run.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench lint format install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/python -m experiments run digits-mlp --launcher local && \
	$(BIN)/python -m analysis report digits-mlp --out results/digits-mlp && \
	echo "make demo: $$(( $$(date +%s) - start )) s wall clock (after install)"

# The quick suite: pyproject's addopts leave out the `slow` and `slurm` tests.
test: $(STAMP)
	$(BIN)/python -m pytest -q

# Every test (-m '' lifts that filter), the SLURM ones required: start the cluster first with
# `sudo slurm/local_cluster.sh up` (.ci/run does).
test-all: $(STAMP)
	STN_REQUIRE_SLURM=1 $(BIN)/python -m pytest -q -m ''

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs results .pytest_cache
