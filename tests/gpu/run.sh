#!/usr/bin/env bash
# The one GPU check: CPU-side table tests, every GPU parity test (*_gpu_test), the CUDA backend's
# logits against transformers + PEFT, the LoRA kernel and attention benchmarks against their HBM
# floors, compute-sanitizer memcheck and racecheck on the parity tests' small filters, and the
# end-to-end decode benchmark (ours vs base-only and vs PEFT) last. Each step runs under a timeout
# inside one time budget (default 450 s, under 8 minutes on one H200); full logs are kept and a
# short table is printed last.
#
# Through the device tool (its machine has nvcc, CMake and the CUDA runtime but not this project's
# C++ dependencies, so the binaries travel prebuilt):
#   1. here:  bash tests/gpu/bundle.sh [EXTRA_TARGET...]   -> .gpu-bundle/ (git-ignored)
#   2. tool:  run with carry [".gpu-bundle"], command "bash tests/gpu/run.sh", timeout_s 540
# The tool sends the checkout its session was started in (not a helper's worktree), so the bundle
# and this script must be in that checkout. Without a bundle (or with USE_BUNDLE=0) this script
# configures and builds into BUILD_DIR instead, which needs those dependencies (CMAKE_ARGS may
# point at a carried prefix).
#
# Usage: tests/gpu/run.sh [--dry-run]
#   --dry-run (also chosen when no GPU answers nvidia-smi): builds the bundle if there is none,
#   checks that its libraries resolve, runs the CPU-side tests; the GPU rows say 'skipped'.
# Environment: BUNDLE_DIR (.gpu-bundle), USE_BUNDLE (1), BUDGET_S (450), STEP_TIMEOUT (150 s per
#   test or benchmark step), SANITIZER_TIMEOUT (60), LORA_BENCH_ARGS (--dtype=both),
#   DECODE_TIMEOUT (200), DECODE_LAYERS (2), DECODE_ROUNDS (2), DECODE_NEW_TOKENS (32),
#   SANITIZE_FILTER_<binary> (gtest filter for that parity binary's sanitizer runs),
#   LOG_DIR, and without a bundle BUILD_DIR (build-gpu), JOBS (nproc), CMAKE_ARGS.
# Output: with $OUT set (the device tool), logs go to a temporary LOG_DIR and come back as
#   $OUT/gpu-logs.tar.gz, next to $OUT/summary.txt (rewritten after every step, so a killed run
#   still returns its rows) and $OUT/lora_gpu_bench.{csv,log}: the tool returns at most 8 files.
#   Without $OUT, LOG_DIR defaults to build/gpu-logs. Exit status 0 when every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1
if [[ $DRY_RUN == 0 ]] && ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run.sh: no GPU answers nvidia-smi; running the dry run"
  DRY_RUN=1
fi
BUNDLE_DIR=${BUNDLE_DIR:-.gpu-bundle}
USE_BUNDLE=${USE_BUNDLE:-1}
BUDGET_S=${BUDGET_S:-450}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}
SANITIZER_TIMEOUT=${SANITIZER_TIMEOUT:-60}
LORA_BENCH_ARGS=${LORA_BENCH_ARGS:---dtype=both}
BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
OUT_DIR=${OUT:-}
if [[ -n $OUT_DIR ]]; then
  LOG_DIR=${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/loraserve-gpu-logs.XXXXXX")}
else
  LOG_DIR=${LOG_DIR:-build/gpu-logs}
fi
mkdir -p "$LOG_DIR"
SUMMARY="${OUT_DIR:-$LOG_DIR}/summary.txt"
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/loraserve-gpu-run.XXXXXX")
START=$SECONDS

ROWS=()
FAILED=0
write_summary() {
  {
    printf '%-34s %-12s %6s  %s\n' step result time note
    printf '%s\n' "${ROWS[@]}"
  } >"$SUMMARY"
}
# row NAME RESULT TIME NOTE: one line of the final table.
row() {
  ROWS+=("$(printf '%-34s %-12s %6s  %s' "$1" "$2" "$3" "${4:-}")")
  write_summary
}
skip() { row "$1" skipped "" "$2"; }

# step NAME TIMEOUT COMMAND...: runs COMMAND under min(TIMEOUT, what is left of BUDGET_S), logs
# to LOG_DIR/NAME.log and records a row; NOTE_FN, when set, names a function that prints the
# row's note from the log.
NOTE_FN=
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  if ((left < 15)); then
    skip "$name" "out of time (BUDGET_S=$BUDGET_S)"
    FAILED=1
    return 1
  fi
  ((limit > left)) && limit=$left
  local log="$LOG_DIR/$name.log" t0=$SECONDS rc result=ok note=
  echo "== $name: $*" | tee "$log"
  timeout -k 5 "$limit" "$@" >>"$log" 2>&1
  rc=$?
  if [[ $rc == 124 || $rc == 137 ]]; then
    result=TIMEOUT
  elif [[ $rc != 0 ]]; then
    result="FAIL rc=$rc"
  fi
  [[ -n $NOTE_FN ]] && note=$($NOTE_FN "$log")
  if [[ $result != ok ]]; then
    FAILED=1
    tail -20 "$log"
  fi
  row "$name" "$result" "$((SECONDS - t0))s" "$note"
  return $rc
}
# The note functions below are called through NOTE_FN.
# shellcheck disable=SC2317
gtest_note() {
  local passed failed
  passed=$(grep -o '\[  PASSED  \] [0-9]* test' "$1" | grep -o '[0-9]*' | tail -1)
  failed=$(grep -o '^ *[0-9]* FAILED TEST' "$1" | grep -o '[0-9]*' | tail -1)
  echo "${passed:-0} passed${failed:+, $failed failed}"
}
# shellcheck disable=SC2317
sanitizer_note() { grep -o 'ERROR SUMMARY: .*' "$1" | tail -1; }
# shellcheck disable=SC2317
last_line_note() { grep -v '^\s*$' "$1" | tail -1 | cut -c1-90; }
# shellcheck disable=SC2317
decode_note() {
  local ratio peft
  ratio=$(grep -E '^ours 1024 adapters' "$1" | awk '{print $(NF-1)}' | tail -1)
  peft=$(grep -o 'ours-64 / PEFT-mixed: .*' "$1" | tail -1)
  echo "1024 adapters ${ratio:-?}x base (goal >= 0.75); ${peft:-no PEFT ratio} (goal >= 5x)"
}
# shellcheck disable=SC2317
lora_bench_note() {
  local note
  note=$(sed -n 's/^lora_bench summary: worst ratio \([0-9.x]*\).* over \([0-9]*\) cases.* at \(.*\) (.*; \([0-9]*\) of .*/worst \1 over \2 cases >= 16 MiB (goal <= 1.3x) at \3; \4 of \2 meet it/p' "$1")
  if [[ -n $note ]]; then echo "$note"; else last_line_note "$1"; fi
}

# ---- binaries: the carried bundle, else a build

unpack() {  # unpack FILE.xz: in place, with python3's lzma where xz is missing
  if command -v xz >/dev/null; then
    xz -d "$1"
  else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], "wb"))' \
      "$1" && rm "$1"
  fi
}
cuda_lib_dirs() {
  local d nvcc
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    [[ -n $d && -d $d/lib64 ]] && echo "$d/lib64"
    [[ -n $d && -d $d/targets/x86_64-linux/lib ]] && echo "$d/targets/x86_64-linux/lib"
  done
  if nvcc=$(command -v nvcc); then
    d=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
    [[ -d $d/lib64 ]] && echo "$d/lib64"
  fi
}
unresolved() {  # the libraries some binary in RUN_DIR/bin cannot load with LIBPATH
  local b
  for b in "$RUN_DIR"/bin/*; do
    LD_LIBRARY_PATH=$LIBPATH ldd "$b" 2>&1 | grep 'not found' | sed "s|^|$(basename "$b"): |"
  done
}

LIBPATH=$(cuda_lib_dirs | awk '!seen[$0]++' | paste -sd:)
if [[ $USE_BUNDLE == 1 && ! -f $BUNDLE_DIR/MANIFEST && $DRY_RUN == 1 ]]; then
  step bundle_build "$STEP_TIMEOUT" bash tests/gpu/bundle.sh
fi
if [[ $USE_BUNDLE == 1 && -f $BUNDLE_DIR/MANIFEST ]]; then
  log="$LOG_DIR/bundle.log"
  cat "$BUNDLE_DIR/MANIFEST" >"$log"
  mkdir -p "$RUN_DIR/bin"
  if (cd "$BUNDLE_DIR" && sha256sum --quiet -c SHA256SUMS) >>"$log" 2>&1 &&
    cp -r "$BUNDLE_DIR/bin" "$BUNDLE_DIR/lib" "$RUN_DIR/" >>"$log" 2>&1; then
    while read -r f; do unpack "$f" >>"$log" 2>&1 || echo "cannot unpack $f" >>"$log"; done \
      < <(find "$RUN_DIR/lib" -name '*.xz')
    LIBPATH="$RUN_DIR/lib${LIBPATH:+:$LIBPATH}"
    missing=$(unresolved)
    if [[ -n $missing ]]; then
      # The system's libstdc++/libgcc_s are older than the build machine's: use the bundled ones.
      LIBPATH="$RUN_DIR/lib:$RUN_DIR/lib/compat:${LIBPATH#"$RUN_DIR/lib:"}"
      missing=$(unresolved)
    fi
    if [[ -n $missing ]] && grep -q libcudart <<<"$missing"; then
      cudart=$(find /usr/local /opt -maxdepth 10 -name 'libcudart.so.13*' -print -quit 2>/dev/null)
      [[ -n $cudart ]] && LIBPATH="$LIBPATH:$(dirname "$cudart")" && missing=$(unresolved)
    fi
    echo "LD_LIBRARY_PATH for the binaries: $LIBPATH" >>"$log"
    source_line=$(sed -n 's/^source: //p' "$BUNDLE_DIR/MANIFEST" | cut -c1-12)
    if [[ -n $missing ]]; then
      echo "$missing" >>"$log"
      cat "$log"
      row bundle "FAIL" "" "unresolved: $(echo "$missing" | grep -o 'lib[^ ]*' | sort -u | paste -sd' ')"
      FAILED=1
    else
      row bundle ok "" "$(find "$RUN_DIR/bin" -type f | wc -l) binaries from ${source_line:-?}; libraries resolve"
    fi
  else
    cat "$log"
    row bundle "FAIL" "" "checksums or copy failed (see bundle.log)"
    FAILED=1
  fi
else
  # shellcheck disable=SC2086  # CMAKE_ARGS is a list of arguments
  step configure "$STEP_TIMEOUT" cmake --preset default -B "$BUILD_DIR" -DLORASERVE_CUDA=ON \
    ${CMAKE_ARGS:-}
  if grep -q "CUDA backend enabled" "$LOG_DIR/configure.log"; then
    targets=(kernels_cuda_plan_test lora_kernels_gpu_test lora_gpu_bench cuda_kernels_gpu_test
      attention_bench cuda_backend_gpu_test loraserve-cuda cuda_decode_bench)
    # shellcheck disable=SC2206  # GPU_TARGETS is a space-separated list
    for t in ${GPU_TARGETS:-}; do
      ninja -C "$BUILD_DIR" -t query "$t" >/dev/null 2>&1 && targets+=("$t")
    done
    step build "$BUDGET_S" cmake --build "$BUILD_DIR" -j"$JOBS" --target "${targets[@]}"
    mkdir -p "$RUN_DIR/bin"
    for t in "${targets[@]}"; do
      rel=$(ninja -C "$BUILD_DIR" -t query "$t" | awk '/^  input: phony/ { getline; print $1; exit }')
      rel=${rel:-$t}  # a target named like its file (loraserve-cuda) has no phony edge
      [[ -x $BUILD_DIR/$rel ]] && ln -s "$PWD/$BUILD_DIR/$rel" "$RUN_DIR/bin/$t"
    done
  else
    echo "run.sh: configure failed or found no nvcc (see $LOG_DIR/configure.log). The C++"
    echo "  dependencies are missing here: build tests/gpu/bundle.sh on a dev machine and carry it."
    FAILED=1
  fi
fi
BIN=$RUN_DIR/bin
RUN_ENV=(env "LD_LIBRARY_PATH=$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")

# ---- tests and benchmarks

NOTE_FN=gtest_note
if [[ -x $BIN/kernels_cuda_plan_test ]]; then
  step cpu_table_tests "$STEP_TIMEOUT" "${RUN_ENV[@]}" "$BIN/kernels_cuda_plan_test" \
    --gtest_output=xml:"$LOG_DIR/cpu_table_tests.xml"
else
  row cpu_table_tests FAIL "" "no kernels_cuda_plan_test binary"
  FAILED=1
fi

PARITY=()
for b in "$BIN"/*_gpu_test; do [[ -x $b ]] && PARITY+=("$b"); done
if [[ $DRY_RUN == 1 ]]; then
  skip gen_model "dry run: no GPU"
  for b in "${PARITY[@]}"; do skip "gpu_parity.$(basename "$b")" "dry run: no GPU"; done
  skip peft_parity "dry run: no GPU"
  skip lora_bench "dry run: no GPU"
  skip attention_bench "dry run: no GPU"
  skip e2e_decode "dry run: no GPU"
  skip memcheck "dry run: no GPU"
  skip racecheck "dry run: no GPU"
else
  {
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv
  } >"$LOG_DIR/gpu.txt" 2>&1
  head -1 "$LOG_DIR/gpu.txt"

  # cuda_backend_gpu_test's model: generated here by the machine's python3 (torch, transformers).
  # head_dim 64, GQA 2, 3 layers, with biases on q/k/v/o, so every op and fused path runs.
  PY=python3
  [[ -x .venv/bin/python ]] && PY=.venv/bin/python
  step gen_model "$STEP_TIMEOUT" "$PY" tools/gen_model.py --out "$RUN_DIR/model" --seed 11 \
    --layers 3 --hidden 256 --intermediate 688 --heads 4 --kv-heads 2 --vocab 1024 \
    --attention-bias
  export LORASERVE_GPU_MODEL_DIR=$RUN_DIR/model
  ((${#PARITY[@]})) || { row gpu_parity FAIL "" "no *_gpu_test binary"; FAILED=1; }
  for b in "${PARITY[@]}"; do
    name=$(basename "$b")
    step "gpu_parity.$name" "$STEP_TIMEOUT" "${RUN_ENV[@]}" "$b" \
      --gtest_output=xml:"$LOG_DIR/gpu_parity.$name.xml"
  done

  # Logits of the CUDA backend against transformers and PEFT on this machine: the CPU's
  # reference tests, run with --device cuda and fp32 weights (the bf16 weight-dtype cases are the
  # CPU's: on the GPU the activations are cast to bf16 too, a different rounding).
  if [[ -x $BIN/loraserve-cuda ]]; then
    # The bundle's libraries for the binary alone (a wrapper), so python3's torch keeps its own.
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%q exec %q "$@"\n' "$LIBPATH" "$BIN/loraserve-cuda" \
      >"$RUN_DIR/loraserve"
    chmod +x "$RUN_DIR/loraserve"
    step peft_parity "$STEP_TIMEOUT" env LORASERVE_TEST_DEVICE=cuda LORASERVE_BIN="$RUN_DIR/loraserve" \
      "$PY" -m pytest -q -p no:cacheprovider \
      tests/python/test_logits_parity.py tests/python/test_peft_parity.py \
      -k "not weight_dtypes_and_isas"
  else
    row peft_parity FAIL "" "no loraserve-cuda binary in the bundle"
    FAILED=1
  fi
  NOTE_FN=lora_bench_note
  if [[ -x $BIN/lora_gpu_bench ]]; then
    # shellcheck disable=SC2086  # LORA_BENCH_ARGS is a list of arguments
    step lora_bench "$STEP_TIMEOUT" "${RUN_ENV[@]}" "$BIN/lora_gpu_bench" \
      --csv="${OUT_DIR:-$LOG_DIR}/lora_gpu_bench.csv" $LORA_BENCH_ARGS
    [[ -n $OUT_DIR ]] && cp "$LOG_DIR/lora_bench.log" "$OUT_DIR/lora_gpu_bench.log"
  else
    row lora_bench FAIL "" "no lora_gpu_bench binary"
    FAILED=1
  fi
  NOTE_FN=last_line_note
  if [[ -x $BIN/attention_bench ]]; then
    step attention_bench "$STEP_TIMEOUT" "${RUN_ENV[@]}" "$BIN/attention_bench"
  else
    skip attention_bench "no attention_bench binary"
  fi

  # The sanitizers run each parity binary's small problems only (memcheck is 10-100x slower).
  SANITIZER=$(command -v compute-sanitizer)
  for d in $(cuda_lib_dirs) /usr/local/cuda/lib64; do
    [[ -z $SANITIZER && -x $d/../bin/compute-sanitizer ]] && SANITIZER=$d/../bin/compute-sanitizer
    [[ -z $SANITIZER && -x $d/../compute-sanitizer/compute-sanitizer ]] &&
      SANITIZER=$d/../compute-sanitizer/compute-sanitizer
  done
  SANITIZE_FILTER_lora_kernels_gpu_test=${SANITIZE_FILTER_lora_kernels_gpu_test:-'*OddDims*:*GraphReplay*:*Launchers*'}
  SANITIZE_FILTER_cuda_kernels_gpu_test=${SANITIZE_FILTER_cuda_kernels_gpu_test:-'*SpareCapacity*:*GraphReplay*:*Launchers*:CudaElementwiseGpuTest.*'}
  SANITIZE_FILTER_cuda_backend_gpu_test=${SANITIZE_FILTER_cuda_backend_gpu_test:-'*Small*:*ForwardLogits*'}
  NOTE_FN=sanitizer_note
  for b in "${PARITY[@]}"; do
    name=$(basename "$b")
    var="SANITIZE_FILTER_$name"
    filter=${!var:-'*Small*'}
    if [[ -z $SANITIZER ]]; then
      skip "memcheck.$name" "compute-sanitizer not found"
      FAILED=1
      continue
    fi
    if ! "${RUN_ENV[@]}" "$b" --gtest_list_tests --gtest_filter="$filter" | grep -q '^  '; then
      skip "memcheck.$name" "no test matches $filter (set $var)"
      continue
    fi
    for tool in memcheck racecheck; do
      step "$tool.$name" "$SANITIZER_TIMEOUT" "${RUN_ENV[@]}" "$SANITIZER" --tool "$tool" \
        --error-exitcode 1 --print-limit 20 "$b" --gtest_filter="$filter"
    done
  done
  # Last, with what is left of the budget: the correctness steps above come first.
  NOTE_FN=decode_note
  if [[ -x $BIN/cuda_decode_bench ]]; then
    # A 7B-shaped model cut to DECODE_LAYERS layers, ours (base, 1, 64, 1024 adapters) next to
    # PEFT's mixed batch on the same GPU.
    step e2e_decode "${DECODE_TIMEOUT:-200}" env OURS_LD_LIBRARY_PATH="$LIBPATH" \
      LAYERS="${DECODE_LAYERS:-2}" ROUNDS="${DECODE_ROUNDS:-2}" NEW_TOKENS="${DECODE_NEW_TOKENS:-32}" \
      LOG_DIR="$LOG_DIR/decode" STEP_TIMEOUT=110 bash tests/gpu/decode_bench.sh "$BIN/cuda_decode_bench"
  else
    skip e2e_decode "no cuda_decode_bench binary"
  fi
fi

# ---- report

echo
echo "logs: $LOG_DIR ($((SECONDS - START)) s in all)"
if [[ -n $OUT_DIR ]]; then
  tar -czf "$OUT_DIR/gpu-logs.tar.gz" -C "$LOG_DIR" . && echo "      and $OUT_DIR/gpu-logs.tar.gz"
fi
grep -h '^lora_bench summary' "$LOG_DIR/lora_bench.log" 2>/dev/null
cat "$SUMMARY"
rm -rf "$RUN_DIR"
exit $FAILED
