#!/usr/bin/env bash
# Sets up, builds and runs every test: C++ unit tests (ctest) and the Python reference tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc)"
ctest --preset default -j"$(nproc)"
.venv/bin/python -m pytest -q tests/python
