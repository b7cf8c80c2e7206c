#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU) from the source vendored in PyPI's llama-cpp-python sdist,
# outside the project, under $PEERS_HOME/llamacpp. Idempotent: skips when the binary is there.
# Also needs the peers venv (install_peers_venv.sh) for the GGUF converters' python deps.
set -euo pipefail
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DIR="$PEERS_HOME/llamacpp"
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
BIN="$DIR/build/bin/llama-server"
if [ -x "$BIN" ]; then echo "install_llamacpp: $BIN present"; exit 0; fi
mkdir -p "$DIR"
PIP="$PEERS_HOME/venv/bin/pip"; [ -x "$PIP" ] || PIP="python3 -m pip"
if [ ! -d "$SRC" ]; then
  $PIP download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$DIR/dl"
  tar xzf "$DIR/dl/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
fi
start=$(date +%s)
nice -n 10 cmake -S "$SRC" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
nice -n 10 cmake --build "$DIR/build" --target llama-server -j"${JOBS:-2}"
echo "install_llamacpp: built $BIN in $(( $(date +%s) - start )) s"
(cd "$SRC" && git rev-parse HEAD 2>/dev/null || echo unknown) > "$DIR/COMMIT"
"$BIN" --version > "$DIR/VERSION" 2>&1 || true
