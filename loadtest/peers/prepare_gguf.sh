#!/usr/bin/env bash
# Converts the model (f32 and f16) and each PEFT adapter (f32) to GGUF for llama-server, with
# the converters vendored in the llama-cpp-python sdist, run in the peers venv.
# Usage: prepare_gguf.sh MODEL_DIR ADAPTER_DIR...   Output: $PEERS_HOME/gguf/. Idempotent.
# An adapter that the converter refuses is recorded in $PEERS_HOME/gguf/NAME.failed.
set -uo pipefail
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
PY="$PEERS_HOME/venv/bin/python"
SRC=$(ls -d "$PEERS_HOME"/llamacpp/llama_cpp_python-*/vendor/llama.cpp | head -n1)
OUT="$PEERS_HOME/gguf"
MODEL="$1"; shift
mkdir -p "$OUT"
export PYTHONPATH="$SRC/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
for t in f32 f16; do
  [ -s "$OUT/model-$t.gguf" ] || "$PY" "$SRC/convert_hf_to_gguf.py" "$MODEL" --outtype "$t" \
    --outfile "$OUT/model-$t.gguf" > "$OUT/model-$t.log" 2>&1 || { echo "prepare_gguf: model $t failed, see $OUT/model-$t.log" >&2; exit 1; }
done
for a in "$@"; do
  n=$(basename "$a")
  [ -s "$OUT/$n.gguf" ] || [ -f "$OUT/$n.failed" ] && continue
  if ! "$PY" "$SRC/convert_lora_to_gguf.py" --base "$MODEL" --outtype f32 --outfile "$OUT/$n.gguf" "$a" \
      > "$OUT/$n.log" 2>&1; then
    rm -f "$OUT/$n.gguf"
    grep -v '^INFO' "$OUT/$n.log" | tail -n 3 > "$OUT/$n.failed"
    echo "prepare_gguf: adapter $n refused: $(tail -n 1 "$OUT/$n.failed")" >&2
  fi
done
ls "$OUT"
