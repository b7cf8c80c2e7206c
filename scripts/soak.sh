#!/usr/bin/env bash
# Soak test (tests/soak/soak.py): the real server at twice its measured capacity with mixed
# traffic, cancellations, uploads, unloads, pins and merge-mode switches, for MINUTES minutes.
# Fails on any lost or hung request, wrong greedy answer, unbounded queue or RSS growth.
#   scripts/soak.sh MINUTES [--factor F] [--out DIR]
# Expects a built tree (scripts/test.sh or cmake --build --preset default).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:?usage: scripts/soak.sh MINUTES [--factor F] [--out DIR]}"
shift
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/python tests/soak/soak.py --minutes "$minutes" "$@"
