#!/usr/bin/env bash
# The main job: sets up, builds and serves SmolLM2-135M-Instruct with the demo LoRA adapters
# over gRPC (127.0.0.1:50051) and Prometheus metrics (127.0.0.1:9400/metrics).
# Extra arguments go to `loraserve serve` (see `build/loraserve serve --help`); the adapter
# store is .cache/store unless LORASERVE_STORE names another folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export CCACHE_BASEDIR="$PWD"
# OpenMP threads spin up to 100k iterations (~0.1-0.3 ms) between parallel regions, then sleep:
# 1.7x faster than OMP_WAIT_POLICY=PASSIVE at batch 1. The engine shrinks its team to the
# cores other processes leave free (--cpu-threads 0), so a busy neighbour does not turn the
# spinning into a collapse (docs/PERFORMANCE.md, "Threading policy").
export GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-100000}"
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc)" --target loraserve

mkdir -p .cache
if MODEL=$(bash scripts/setup_default_model.sh | tail -n 1) && [ -f "$MODEL/config.json" ]; then
  ADAPTERS=(--adapter-dir assets/adapters)
else
  echo "##########################################################################" >&2
  echo "serve: the SmolLM2 default model is unavailable; FALLING BACK to a generated" >&2
  echo "serve: random-weight model (its output is gibberish, the API is the same)." >&2
  echo "##########################################################################" >&2
  MODEL=.cache/models/generated-fallback
  [ -f "$MODEL/config.json" ] || .venv/bin/python tools/gen_model.py --out "$MODEL" --seed 0 \
    --hidden 256 --intermediate 688 --layers 4 --heads 8 --kv-heads 4 >/dev/null
  ADAPTERS=()
fi

TOKEN_FILE=.cache/admin-token
[ -s "$TOKEN_FILE" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$TOKEN_FILE"
echo "serve: model $MODEL; admin token in $TOKEN_FILE" >&2
exec build/loraserve serve --model "$MODEL" "${ADAPTERS[@]}" --store "${LORASERVE_STORE:-.cache/store}" \
  --admin-token-file "$TOKEN_FILE" --load-root "$PWD" --served-model-name smollm2 "$@"
