# Cairn. `make demo` and `make test` work on a fresh Debian 12 machine with Node 20: both run
# `setup`, which installs what is missing (Debian packages, npm packages) and is quick otherwise.
SHELL := /bin/bash
NODE  := node
BIN   := dist/src/bin

.PHONY: all setup build typecheck lint format format-check test check bench demo demo-csi wasm wasm-check k8s sim clean

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@npx tsc -p tsconfig.json
	@cp src/csi/csi.proto dist/src/csi/csi.proto
	@chmod +x $(BIN)/*.js

typecheck: setup
	@npx tsc -p tsconfig.json --noEmit

lint: setup
	@npx eslint --max-warnings 0 .

format: setup
	@npx prettier --log-level warn --write .

format-check: setup
	@npx prettier --log-level warn --check .

# The whole suite: unit, model, simulation and integration tests (real etcd, real processes).
# It ends with one line: "N passed, N failed".
test: build
	@$(NODE) scripts/run_tests.mjs

# The one gate before every commit.
check: typecheck lint format-check test

# Full-size benchmarks: one JSON line per result (see docs/bench/).
bench: build
	@bash scripts/bench.sh

# Seeded cluster simulations: one JSON line per failing seed, then "N passed, N failed".
# A failure names its seed; replay it with: node scripts/sim.mjs --seed N
SEEDS ?= 100
sim: build
	@$(NODE) scripts/sim.mjs --seeds $(SEEDS)
	@$(NODE) scripts/sim_map.mjs --seeds 20
	@$(NODE) scripts/sim_map.mjs --seeds 5 --bug map-swap-before-durable
	@$(NODE) scripts/sim_map.mjs --seeds 5 --bug map-gc-reachable
	@$(NODE) scripts/sim_map.mjs --seeds 5 --bug map-gc-ignores-snapshots
	@$(NODE) scripts/sim_map.mjs --seeds 5 --bug clone-reads-parent
	@$(NODE) scripts/sim_map.mjs --seeds 5 --steps 400 --bug shrink-keeps-tail

# KEEP=1 keeps the demo's cluster and its dashboard running until Ctrl-C (docs/dashboard.md).
demo: build
	@DEMO_KEEP=$(if $(KEEP),$(KEEP),0) bash scripts/demo.sh

# A volume's life through the CSI socket alone: provision, stage, publish, snapshot, clone, expand.
demo-csi: build
	@node scripts/demo_csi.mjs

# Rebuilds the committed wasm kernels from wasm/kernel.ts and refreshes wasm/SHA256SUMS.
wasm: setup
	@$(NODE) wasm/build.mjs

wasm-check: setup
	@$(NODE) wasm/build.mjs --check

# Regenerates k8s/*.yaml from the typed sources in k8s/src (edit those, not the YAML).
k8s: build
	@$(NODE) dist/k8s/src/build.js

clean:
	rm -rf dist
