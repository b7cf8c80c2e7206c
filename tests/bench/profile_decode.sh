#!/usr/bin/env bash
# Where a decode step's time goes: samples build/bench/decode_bench with `perf record` at each
# batch size (default 1 and 64) on a model folder (default SmolLM2-135M-Instruct from
# scripts/setup_default_model.sh) and prints the share of samples per kernel family. perf must
# be able to sample this process (Debian's linux-perf; kernel.perf_event_paranoid <= 2).
#   tests/bench/profile_decode.sh [MODEL_DIR] [BATCH ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
model="${1:-$(bash scripts/setup_default_model.sh | tail -n 1)}"
shift || true
batches=("$@")
[ ${#batches[@]} -gt 0 ] || batches=(1 64)
bench=build/bench/decode_bench
[ -x "$bench" ] || { echo "profile_decode: build $bench first (cmake --build --preset default)" >&2; exit 2; }
command -v perf >/dev/null || { echo "profile_decode: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for batch in "${batches[@]}"; do
  # Sampling starts after the model load, the first touch of the pool and weight arena (the
  # kernel zeroing their huge pages showed as a third of a batch-1 profile started at 3 s) and
  # the KV prefill (-D); repetitions keep the steady state long enough to dominate the samples.
  reps=$(( batch >= 32 ? 10 : 80 ))
  LORASERVE_BENCH_MODEL="$model" perf record -q -F 999 -D 9000 -o "$out/perf.$batch" -- \
    "$bench" --benchmark_filter="BM_DecodeStep/batch:${batch}/" --benchmark_format=console \
    --benchmark_repetitions="$reps" >"$out/bench.$batch" 2>&1
  echo "== batch $batch: $(grep -o 'median_ms=[0-9.]*[a-z]*' "$out/bench.$batch" | head -1)"
  # Sorted by dso too: libgomp has no symbols, and its spin-wait would otherwise count as "other".
  perf report -q -i "$out/perf.$batch" --no-children --sort dso,symbol 2>/dev/null |
    awk '
      /%/ {
        share = $1; sub("%", "", share); name = $0;
        if (name ~ /Shrink|Expand|Sgmv|Bgmv|Linear|sgemm|gemv/) family = "matmul (LinearForward micro-kernels, LoRA)";
        else if (name ~ /PagedAttention|Attention|Attend|ScoreTile|WeightedSum|Softmax/) family = "attention";
        else if (name ~ /RmsNorm/) family = "rms_norm";
        else if (name ~ /Rope|rope/) family = "rope";
        else if (name ~ /Silu|Swiglu|Activation|Gelu/) family = "activation";
        else if (name ~ /gomp|GOMP|omp_/) family = "OpenMP runtime (spin/wait)";
        else if (name ~ /\[k\]/) family = "kernel";
        else if (name ~ /memcpy|memmove|memset/) family = "memcpy/memset";
        else family = "other";
        total[family] += share;
      }
      END { for (f in total) printf "  %6.2f%%  %s\n", total[f], f }' | sort -rn
done
