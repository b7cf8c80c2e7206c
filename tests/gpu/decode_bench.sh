#!/usr/bin/env bash
# Decode throughput on a GPU machine, ours next to PEFT on the same GPU and the same weights:
# generates a Llama-7B-shaped model (hidden 4096, intermediate 11008, 32 heads, 32 kv heads,
# vocab 32000, bf16) with only LAYERS of its 32 layers (default 4) so that generation and both
# benchmarks fit in about 3 minutes, runs tests/gpu/cuda_decode_bench (base, 1, 64 and 1024
# rank-16 adapters) and loadtest/peers/peft_decode_bench.py (base, 1, 64 mixed), and prints one
# table. Per-layer cost is what the layer cut keeps; the lm_head's share of a step is larger than
# in the 32-layer model, so the ratios to base understate LoRA's share of a full 7B step.
#
# Usage: tests/gpu/decode_bench.sh [BIN]   (default build/tests/cuda_decode_bench; none: PEFT only)
#   On the GPU machine tests/gpu/run.sh calls it with the carried .gpu-bundle's binary
#   (tests/gpu/bundle.sh packs cuda_decode_bench) and OURS_LD_LIBRARY_PATH set to its libraries.
# Environment: LAYERS (4), REQUESTS (64), PROMPT_TOKENS (64), NEW_TOKENS (64), ROUNDS (3),
#   DEVICE (cuda), MODEL_DIR (default /tmp/loraserve-decode-7b-l$LAYERS, reused when present),
#   GEN_ARGS (replaces the 7B shape, e.g. a tiny model for a CPU check), PEFT_CASES
#   (base,1,mixed), PEFT_ARGS (more peft_decode_bench.py flags, e.g. --threads 1), LOG_DIR
#   (default $OUT, else /tmp/decode-bench-logs), STEP_TIMEOUT seconds per step (default 200),
#   PY (default .venv/bin/python when present, else python3: the GPU image's has torch + peft).
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"

BIN=${1:-$ROOT/build/tests/cuda_decode_bench}
# Our binary's libraries (tests/gpu/run.sh passes the unpacked .gpu-bundle's): set for it alone,
# so python3's torch keeps its own libgomp and libstdc++.
OURS_ENV=(env)
[[ -n ${OURS_LD_LIBRARY_PATH:-} ]] && OURS_ENV=(env "LD_LIBRARY_PATH=$OURS_LD_LIBRARY_PATH")
LAYERS=${LAYERS:-4}
REQUESTS=${REQUESTS:-64}
PROMPT_TOKENS=${PROMPT_TOKENS:-64}
NEW_TOKENS=${NEW_TOKENS:-64}
ROUNDS=${ROUNDS:-3}
DEVICE=${DEVICE:-cuda}
PEFT_CASES=${PEFT_CASES:-base,1,mixed}
STEP_TIMEOUT=${STEP_TIMEOUT:-200}
LOG_DIR=${LOG_DIR:-${OUT:-/tmp/decode-bench-logs}}
SHAPE_7B="--hidden 4096 --intermediate 11008 --heads 32 --kv-heads 32 --vocab 32000"
GEN_ARGS=${GEN_ARGS:-"$SHAPE_7B --layers $LAYERS --dtype bf16 --init-std 0.02"}
MODEL_DIR=${MODEL_DIR:-/tmp/loraserve-decode-7b-l$LAYERS}
if [[ -z ${PY:-} ]]; then
  if [[ -x $ROOT/.venv/bin/python ]]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$LOG_DIR"
if [[ $BIN != none && ! -x $BIN ]]; then
  echo "decode_bench.sh: no executable $BIN (pass its path as \$1, or none for PEFT alone)" >&2
  exit 1
fi
nvidia-smi -L >"$LOG_DIR/gpu.txt" 2>&1 || echo "(no nvidia-smi)" >"$LOG_DIR/gpu.txt"

FAILED=0
# step NAME COMMAND...: runs COMMAND under STEP_TIMEOUT, output to LOG_DIR/NAME.log.
step() {
  local name=$1 start=$SECONDS rc
  shift
  echo "== $name ($(date -u +%H:%M:%S)): $*"
  timeout "$STEP_TIMEOUT" "$@" >"$LOG_DIR/$name.log" 2>&1
  rc=$?
  echo "   $name: rc=$rc in $((SECONDS - start)) s$([[ $rc == 124 ]] && echo ' (TIMEOUT)')"
  if [[ $rc != 0 ]]; then
    FAILED=1
    tail -15 "$LOG_DIR/$name.log"
  fi
  return $rc
}

if [[ ! -f $MODEL_DIR/config.json ]]; then
  # shellcheck disable=SC2086  # GEN_ARGS is a list of arguments
  step gen_model "$PY" "$ROOT/tools/gen_model.py" --out "$MODEL_DIR.tmp" $GEN_ARGS &&
    mv "$MODEL_DIR.tmp" "$MODEL_DIR"
fi
if [[ -f $MODEL_DIR/config.json ]]; then
  COMMON=(--requests "$REQUESTS" --prompt-tokens "$PROMPT_TOKENS" --new-tokens "$NEW_TOKENS"
          --rounds "$ROUNDS" --max-seconds 60)
  [[ $BIN == none ]] || step ours "${OURS_ENV[@]}" "$BIN" --model "$MODEL_DIR" --device "$DEVICE" "${COMMON[@]}" \
    --cases base,1,64,1024 --adapter-dtype bf16 --json "$LOG_DIR/ours.json"
  read -r -a PEFT_EXTRA <<<"${PEFT_ARGS:-}"
  step peft "$PY" "$ROOT/loadtest/peers/peft_decode_bench.py" --model "$MODEL_DIR" \
    --device "$DEVICE" "${COMMON[@]}" --adapters 64 --cases "$PEFT_CASES" \
    --json "$LOG_DIR/peft.json" "${PEFT_EXTRA[@]}"
fi

"$PY" - "$MODEL_DIR" "$LOG_DIR/ours.json" "$LOG_DIR/peft.json" <<'EOF' | tee "$LOG_DIR/summary.txt"
import json, os, sys

model_dir, ours_path, peft_path = sys.argv[1:4]

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

cfg = load(os.path.join(model_dir, "config.json")) or {}
ours, peft = load(ours_path), load(peft_path)
shape = (f"hidden {cfg.get('hidden_size')}, intermediate {cfg.get('intermediate_size')}, "
         f"{cfg.get('num_attention_heads')} heads / {cfg.get('num_key_value_heads')} kv heads, "
         f"vocab {cfg.get('vocab_size')}, {cfg.get('torch_dtype') or cfg.get('dtype')}")
print()
if cfg.get("hidden_size") == 4096 and cfg.get("intermediate_size") == 11008:
    print(f"Llama-7B-shaped model with {cfg.get('num_hidden_layers')} of its 32 layers ({shape})")
else:
    print(f"model {model_dir}: {cfg.get('num_hidden_layers')} layers, {shape}")
src = ours or peft
if src:
    print(f"{src['requests']} requests x ({src['prompt_tokens']} prompt + {src['new_tokens']} new "
          f"tokens), greedy, rank-{src['rank']} adapters on q,k,v,o,gate,up,down; decode tok/s = "
          f"tokens after every request's first token / that window, median of "
          f"{src['rounds']} rounds")
if ours:
    print(f"ours: {ours['backend']}, adapters stored {ours['adapter_dtype']}"
          f"{'' if ours.get('all_adapters_resident') else ', NOT all adapters resident'}")
if peft:
    v = peft["versions"]
    print(f"PEFT: {peft['device']}, {peft['dtype']}, adapters {peft['adapter_dtype']}; torch "
          f"{v['torch']}, transformers {v['transformers']}, peft {v['peft']}")
print()
print(f"{'system':34s} {'adapters':>8s} {'decode tok/s':>13s} {'ratio/base':>10s} "
      f"{'rows != base':>12s}")
rows = []
def row(name, adapters, case, is_base=False):
    if case is None:
        print(f"{name:34s} {adapters:>8} {'missing':>13s} {'':>10s}")
        return None
    flag = "  TRUNCATED" if case.get("truncated") else ""
    differing = "" if is_base else case.get("rows_differing_from_base", "")
    print(f"{name:34s} {adapters:>8} {case['decode_tokens_per_s']:13.1f} "
          f"{case.get('ratio_to_base', 0):10.3f} {differing:>12}{flag}")
    return case["decode_tokens_per_s"]

oc = (ours or {}).get("cases", {})
pc = (peft or {}).get("cases", {})
row("ours base", 0, oc.get("base"), is_base=True)
row("ours 1 adapter", 1, oc.get("1_adapter"))
ours64 = row("ours 64 adapters", 64, oc.get("64_adapters"))
per_batch = min((ours or {}).get("requests", 64), 1024)
row(f"ours 1024 adapters ({per_batch} per batch)", 1024, oc.get("1024_adapters"))
row("PEFT base (disable_adapter)", 0, pc.get("base"), is_base=True)
row("PEFT 1 adapter (set_adapter)", 1, pc.get("1"))
peft64 = row("PEFT mixed (adapter_names)", (peft or {}).get("adapters", 64), pc.get("mixed"))
print("rows != base: rows of the last round whose greedy tokens differ from base's "
      "(0 would mean the adapters did nothing)")
print()
if ours64 and peft64:
    print(f"ours-64 / PEFT-mixed: {ours64 / peft64:.2f}x")
else:
    print("ours-64 / PEFT-mixed: n/a (a side is missing; see the logs)")
EOF
echo "logs: $LOG_DIR"
exit $FAILED
