#!/usr/bin/env bash
# The scale benchmark of issue 14 (loadtest/scale_bench.py): our server on SmolLM2-135M-Instruct
# with N generated adapters (default 10,000) uploaded to a throw-away store, restarted on it,
# then loaded at 1/64/1024/10000 adapters with Zipf and uniform popularity. Uses the project's
# .venv and build/loraserve (LORASERVE_BIN overrides); every flag goes to scale_bench.py, e.g.
#   scripts/scale_bench.sh --out-dir build/scale --server-arg=--host-cache-bytes=268435456
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
bin="${LORASERVE_BIN:-build/loraserve}"
[ -x "$bin" ] || { echo "scale_bench: no server binary at $bin: build it first (scripts/test.sh)" >&2; exit 2; }
model=$(bash scripts/setup_default_model.sh | tail -n 1)
exec .venv/bin/python loadtest/scale_bench.py --binary "$bin" --model "$model" "$@"
