#!/usr/bin/env bash
# Runs the performance benchmarks behind docs/PERFORMANCE.md: generates the ~100M-parameter bench
# model and 64 rank-16 adapters into .cache/bench (once), builds decode_bench and engine_bench,
# runs them and writes JSON results to .cache/bench/. Installs nothing: run scripts/install.sh.
#
# Environment:
#   BENCH_BUILD_DIR     build folder (default build-bench; a Release build of its own)
#   BENCH_WAIT_POLICIES OMP_WAIT_POLICY values to run with, in order (default "PASSIVE"; add
#                       ACTIVE on a quiet machine: libgomp's spin-wait is 10-30x slower whenever
#                       another process holds a core)
#   BENCH_ROUNDS        engine_bench rounds, each running all six cases back to back, starting
#                       at a different case each round (default 6: every case once in each slot)
#   BENCH_NEW_TOKENS    tokens generated per engine request (default 12)
#   BENCH_JOBS          build parallelism (default 2)
#   OPENBLAS_CORETYPE   passed through and recorded: Debian's OpenBLAS 0.3.21 does not know
#                       recent Xeons and falls back to its SSE3 "Prescott" kernels; it only
#                       runs matmuls beyond 512 rows, or on CPUs without AVX2
#                       (see docs/PERFORMANCE.md)
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${BENCH_BUILD_DIR:-build-bench}"
policies="${BENCH_WAIT_POLICIES:-PASSIVE}"
rounds="${BENCH_ROUNDS:-6}"
new_tokens="${BENCH_NEW_TOKENS:-12}"
jobs="${BENCH_JOBS:-2}"
out=.cache/bench
model="$out/model100m"
adapters="$out/adapters"
python=.venv/bin/python

if [[ ! -x "$python" ]]; then
  echo "bench.sh: $python is missing; run scripts/install.sh first" >&2
  exit 1
fi
mkdir -p "$out" "$adapters"

# 12 layers x (hidden 768, intermediate 2048, 12 heads, 4 KV heads) + a tied 32000 x 768
# embedding = 100.1M parameters, stored in fp32 as the CPU backend holds them.
if [[ ! -f "$model/model.safetensors" ]]; then
  "$python" tools/gen_model.py --out "$model" --seed 0 --hidden 768 --intermediate 2048 \
    --layers 12 --heads 12 --kv-heads 4 --vocab 32000 --tie-embeddings --dtype fp32
fi
for i in $(seq 0 63); do
  if [[ ! -f "$adapters/a$i/adapter_model.safetensors" ]]; then
    "$python" tools/gen_adapter.py --model "$model" --out "$adapters/a$i" --seed $((i + 1)) \
      --rank 16 --target-modules q_proj,k_proj,v_proj,o_proj >/dev/null
  fi
done

export CCACHE_BASEDIR="$PWD"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLORASERVE_CUDA=OFF >/dev/null
cmake --build "$build_dir" --target decode_bench engine_bench -j"$jobs"

export LORASERVE_BENCH_MODEL="$model"
export LORASERVE_BENCH_ADAPTERS="$adapters"
{
  printf '{\n  "date": "%s",\n  "commit": "%s",\n' "$(date -u +%FT%TZ)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf '  "cpu": "%s",\n  "cores": %s,\n' \
    "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" "$(nproc)"
  printf '  "load_average_before": "%s",\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf '  "openblas_coretype": "%s",\n' "${OPENBLAS_CORETYPE:-auto}"
  printf '  "wait_policies": "%s"\n}\n' "$policies"
} >"$out/run.json"

for policy in $policies; do
  tag=$(echo "$policy${OPENBLAS_CORETYPE:+_$OPENBLAS_CORETYPE}" | tr "[:upper:]" "[:lower:]")
  echo "== OMP_WAIT_POLICY=$policy (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  OMP_WAIT_POLICY="$policy" "$build_dir/bench/decode_bench" \
    --benchmark_out="$out/decode_bench_$tag.json" --benchmark_out_format=json
  OMP_WAIT_POLICY="$policy" "$build_dir/bench/engine_bench" --rounds="$rounds" \
    --new_tokens="$new_tokens" --json="$out/engine_bench_$tag.json"
done
echo "results: $out/run.json $out/decode_bench_*.json $out/engine_bench_*.json"
