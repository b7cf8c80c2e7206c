#!/usr/bin/env bash
# Starts one system in the background on 127.0.0.1:PORT, serving the base model as "smollm2"
# and the PEFT adapters by their folder names, and waits until GET /v1/models answers.
# Usage: start_peer.sh SYSTEM PORT LOG
#   SYSTEM: loraserve | vllm | vllm-2c | peft | llamacpp | llamacpp-f16
# Prints the process-group id (stop it with stop_peer.sh PGID). Adapters and model from env:
#   PEERS_MODEL (HF folder), PEERS_ADAPTERS (space-separated PEFT folders), PEERS_HOME.
# Each system gets only the adapters it can load; the names it serves go to LOG.adapters.
set -euo pipefail
SYSTEM="$1"; PORT="$2"; LOG="$3"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
MODEL="${PEERS_MODEL:-$ROOT/.cache/models/smollm2-135m-instruct}"
read -r -a ADAPTERS <<< "${PEERS_ADAPTERS:-$ROOT/assets/adapters/devil $ROOT/assets/adapters/jargon $ROOT/assets/adapters/kjv}"
V="$PEERS_HOME/venv"
THREADS="${PEERS_THREADS:-$(nproc)}"
is_dora() { grep -q '"use_dora": *true' "$1/adapter_config.json"; }
names=()
case "$SYSTEM" in
  loraserve)
    # Exactly as scripts/serve.sh starts it, on our ports; it loads assets/adapters/.
    for a in "${ADAPTERS[@]}"; do names+=("$(basename "$a")"); done
    cmd=(bash "$ROOT/scripts/serve.sh" --http-listen "127.0.0.1:$PORT" --listen "127.0.0.1:$((PORT + 1))"
         --metrics-listen "")
    ;;
  vllm|vllm-2c)
    # vllm-2c: the model on every core (vLLM's `auto` binding reserves one for its API server).
    if [ "$SYSTEM" = vllm-2c ]; then
      export VLLM_CPU_OMP_THREADS_BIND="0-$(( $(nproc) - 1 ))" VLLM_CPU_NUM_OF_RESERVED_CPU=0
    fi
    mods=()
    for a in "${ADAPTERS[@]}"; do
      if is_dora "$a"; then echo "start_peer: $SYSTEM: skipping DoRA adapter $(basename "$a") (vLLM does not yet support DoRA)" >> "$LOG.skipped"; continue; fi
      mods+=("$(basename "$a")=$a"); names+=("$(basename "$a")")
    done
    IOMP=$(ls "$V"/lib/libiomp5.so 2>/dev/null | head -n1)
    TCM=$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null | head -n1)
    export LD_PRELOAD="${TCM}${IOMP:+:$IOMP}"
    export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}" VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-auto}"
    export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
    cmd=("$V/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name smollm2
         --host 127.0.0.1 --port "$PORT" --dtype float32 --enable-lora --lora-modules "${mods[@]}"
         --max-lora-rank 32 --max-loras "${#mods[@]}" --max-num-seqs 64 --max-model-len 2048
         ${VLLM_EXTRA_ARGS:-})
    ;;
  peft)
    mods=()
    for a in "${ADAPTERS[@]}"; do mods+=("$(basename "$a")=$a"); names+=("$(basename "$a")"); done
    export HF_HUB_OFFLINE=1
    cmd=("$V/bin/python" "$ROOT/loadtest/peers/peft_server.py" --model "$MODEL" --served-model-name smollm2
         --port "$PORT" --batch-size "${PEFT_BATCH:-64}" --threads "$THREADS" --lora-modules "${mods[@]}")
    ;;
  llamacpp|llamacpp-f16)
    t=f32; [ "$SYSTEM" = llamacpp-f16 ] && t=f16
    G="$PEERS_HOME/gguf"
    # One thread by default: ggml's threads spin at every barrier, and on 2 cores shared with
    # anything else `-t 2` collapsed (8 users: no token in 11 s, against 78 tokens/s with -t 1).
    LT="${PEERS_LLAMACPP_THREADS:-1}"
    loras=()
    for a in "${ADAPTERS[@]}"; do  # ids follow this order: 0, 1, ...
      n=$(basename "$a")
      if [ -s "$G/$n.gguf" ]; then loras+=(--lora-scaled "$G/$n.gguf:0"); names+=("$n")
      else echo "start_peer: $SYSTEM: no GGUF for adapter $n: $(cat "$G/$n.failed" 2>/dev/null)" >> "$LOG.skipped"; fi
    done
    # 64 slots of 64 tokens each. The adapters load at scale 0 (--lora-scaled F:0): a request whose
    # "lora" list is empty gets the server's default list, which with a plain --lora is every
    # adapter at scale 1 (--lora-init-without-apply does not change that), not the base model.
    cmd=("$PEERS_HOME/llamacpp/build/bin/llama-server" -m "$G/model-$t.gguf" --host 127.0.0.1 --port "$PORT"
         -a smollm2 -np 64 -c 4096 --cont-batching -t "$LT" -tb "$LT" -b 2048 -ub 512
         "${loras[@]}" ${LLAMACPP_EXTRA_ARGS:-})
    ;;
  *) echo "start_peer: unknown system $SYSTEM" >&2; exit 2 ;;
esac
printf '%s\n' "${names[@]}" > "$LOG.adapters"
echo "+ ${cmd[*]}" > "$LOG"
setsid "${cmd[@]}" >> "$LOG" 2>&1 < /dev/null &
pid=$!
for _ in $(seq 1 "${PEERS_START_TIMEOUT:-900}"); do
  if ! kill -0 "$pid" 2>/dev/null; then echo "start_peer: $SYSTEM exited; see $LOG" >&2; tail -n 20 "$LOG" >&2; exit 1; fi
  if curl -sf -o /dev/null ${PEERS_API_KEY:+-H "Authorization: Bearer $PEERS_API_KEY"} "http://127.0.0.1:$PORT/v1/models"; then
    echo "$pid"; exit 0
  fi
  sleep 1
done
echo "start_peer: $SYSTEM did not answer on $PORT in time; see $LOG" >&2
kill -- -"$pid" 2>/dev/null || true
exit 1
