# Two commands do all setup on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project into it first (once; re-run when pyproject.toml changes).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    ?= demo
SAMPLES ?= 10000
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: install test test-all demo bench bench-quick simd lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	# torch first, pinned to the wheels on local disk (a newer range would download a CUDA build)
	$(BIN)/pip install -q "torch>=2.13,<2.15" "torchvision<0.30"
	$(BIN)/pip install -q -e ".[dev,bench]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check bioscan_stream zoo jobs tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

# The main job end to end on the embedded default: a synthetic release -> Ray conversion -> streamed batches.
demo: $(STAMP)
	$(BIN)/bioscan-stream synth $(DEMO)/release --samples $(SAMPLES) --seed 0 --packages cropped_256
	$(BIN)/bioscan-stream stats $(DEMO)/release --out $(DEMO)/stats
	$(BIN)/bioscan-stream shards $(DEMO)/release $(DEMO)/shards --package cropped_256 --shard-size 16MB
	$(BIN)/bioscan-stream verify $(DEMO)/shards/cropped_256 $(DEMO)/shards/dna
	$(BIN)/bioscan-stream stream $(DEMO)/shards/cropped_256 --split train --batches 0

# Every benchmark, then the dashboard (benchmarks/README.md); `make bench-quick`: the subset that takes minutes.
bench: $(STAMP)
	$(BIN)/bioscan-stream bench

bench-quick: $(STAMP)
	$(BIN)/bioscan-stream bench --quick

# pillow-simd: a drop-in PIL with a 4-5x faster resize. Needs libjpeg/zlib headers; installed last because
# anything that reinstalls `pillow` replaces it.
simd: $(STAMP)
	apt-get install -y -q libjpeg-dev zlib1g-dev libpng-dev libfreetype-dev
	$(BIN)/pip uninstall -y pillow pillow-simd
	CC="cc -mavx2" $(BIN)/pip install --no-cache-dir --no-binary :all: pillow-simd

clean:
	rm -rf $(DEMO) .pytest_cache
