#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU) from the source vendored in PyPI's llama-cpp-python sdist,
# outside the project, under $PEERS_HOME/llamacpp. Idempotent: skips when the binary is there.
# Also needs the peers venv (install_peers_venv.sh) for the GGUF converters' python deps.
# LLAMACPP_ISA=avx2 builds without AVX-512 into build-avx2/ (to measure an AVX2-only CPU on an
# AVX-512 machine; tests/bench/cpu_vs_llamacpp.sh --llama-bin .../build-avx2/bin); the default
# is GGML_NATIVE. Also builds llama-bench and llama-batched-bench.
set -euo pipefail
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DIR="$PEERS_HOME/llamacpp"
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
ISA="${LLAMACPP_ISA:-native}"
BUILD="$DIR/build"; FLAGS=(-DGGML_NATIVE=ON)
if [ "$ISA" = avx2 ]; then
  BUILD="$DIR/build-avx2"
  FLAGS=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF)
fi
BIN="$BUILD/bin/llama-server"
if [ -x "$BIN" ]; then echo "install_llamacpp: $BIN present"; exit 0; fi
mkdir -p "$DIR"
PIP="$PEERS_HOME/venv/bin/pip"; [ -x "$PIP" ] || PIP="python3 -m pip"
if [ ! -d "$SRC" ]; then
  $PIP download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$DIR/dl"
  tar xzf "$DIR/dl/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
fi
start=$(date +%s)
nice -n 10 cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${FLAGS[@]}" \
  -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
nice -n 10 cmake --build "$BUILD" --target llama-server llama-bench llama-batched-bench -j"${JOBS:-2}"
echo "install_llamacpp: built $BIN in $(( $(date +%s) - start )) s"
(cd "$SRC" && git rev-parse HEAD 2>/dev/null || echo unknown) > "$DIR/COMMIT"
"$BIN" --version > "$DIR/VERSION" 2>&1 || true
