#!/usr/bin/env bash
# Sets up, builds and runs every test: C++ unit tests (ctest) and the Python reference tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# ccache keys on relative paths from here, so a fresh clone elsewhere reuses earlier objects.
export CCACHE_BASEDIR="$PWD"
# libgomp's active spin-wait makes OpenMP 10-30x slower when another process holds a core.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
cmake --preset default >/dev/null
cmake --build --preset default -j"$(nproc)"
ctest --preset default -j"$(nproc)"
.venv/bin/python -m pytest -q tests/python
# Three minutes of the soak test (scripts/soak.sh): twice the measured capacity, mixed traffic,
# cancellations, uploads/unloads/pins, merge-mode switches; no lost, hung or wrong request.
bash scripts/soak.sh 3 --out build/soak
# The unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer (Debug, CPU only, no
# benchmarks): memory errors and undefined behaviour fail CI instead of passing by luck.
cmake --preset asan >/dev/null
cmake --build --preset asan -j"$(nproc)"
ctest --preset asan -j"$(nproc)"
# The engine and server tests again under ThreadSanitizer (RelWithDebInfo, CPU only; only
# runtime_test and server_test are built): the step loop, admin workers, cancellation and the
# HTTP exchange. The preset sets OMP_NUM_THREADS=1 (libgomp is not instrumented), skips the
# single-threaded tokenizer suites, and reads tests/tsan.supp (uninstrumented gRPC, protobuf and
# absl only).
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j"$(nproc)"
ctest --preset tsan -j"$(nproc)"

# libFuzzer smoke: every parser of outside bytes for ~30 s under ASan + UBSan (clang-14; the fuzz
# preset builds only those parsers). Any crash, leak or timeout fails CI; see docs/RELIABILITY.md.
# One fuzzer per core: nothing else runs at this point of CI.
FUZZ_SMOKE_JOBS="${FUZZ_SMOKE_JOBS:-$(nproc)}" bash scripts/fuzz.sh --smoke
