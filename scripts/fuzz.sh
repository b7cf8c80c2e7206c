#!/usr/bin/env bash
# Runs the libFuzzer targets of tests/fuzz/ (docs/RELIABILITY.md, "Fuzzing").
#   scripts/fuzz.sh TARGET MINUTES   one target for MINUTES of wall time, on its seeds plus a
#                                    working corpus kept in build-fuzz/corpus/TARGET
#   scripts/fuzz.sh --smoke          every target for FUZZ_SMOKE_SECONDS (30) from its seeds alone,
#                                    FUZZ_SMOKE_JOBS (half the cores) at a time; fails on any
#                                    crash, leak, timeout or sanitizer report (CI)
#   scripts/fuzz.sh --list           the target names
# Builds the `fuzz` preset first when needed (FUZZ_SKIP_BUILD=1 uses the binaries as they are).
# Crashes go to build-fuzz/crashes/TARGET/; each run prints its wall and CPU seconds, exec/s and
# coverage (cov: edges, ft: features), and appends them to build-fuzz/fuzz-runs.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"

TARGETS=(safetensors model_config peft_config tokenizer_json tokenizer_encode chat_template
         upload_stream openai_request lora_request)
BUILD=build-fuzz
# Per input: 10 s and 2 GiB. Slower or larger than that is a finding (a hang or a blow-up).
LIMITS=(-timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048)

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

build() {
  if [ "${FUZZ_SKIP_BUILD:-0}" = 1 ]; then return; fi
  if [ ! -f "$BUILD/build.ninja" ]; then cmake --preset fuzz >/dev/null; fi
  cmake --build --preset fuzz -j"$(nproc)"
}

# run TARGET SECONDS CORPUS...: one libFuzzer process; prints the summary line, returns its status.
run() {
  local target=$1 seconds=$2
  shift 2
  local crashes="$BUILD/crashes/$target" log="$BUILD/logs/$target.log"
  mkdir -p "$crashes" "$BUILD/logs" "$@"
  local dict=()
  if [ -f "tests/fuzz/dict/$target.dict" ]; then dict=(-dict="tests/fuzz/dict/$target.dict"); fi
  local status=0 timing="$BUILD/logs/$target.time"
  # bash's `time` gives the CPU seconds (user + system), which a busy machine makes smaller than
  # the wall time.
  { TIMEFORMAT='%R %U %S'; time "$BUILD/fuzz/$target" "${LIMITS[@]}" "${dict[@]}" \
      -max_total_time="$seconds" -artifact_prefix="$crashes/" -print_final_stats=1 "$@" \
      >"$log" 2>&1; } 2>"$timing" || status=$?
  local wall cpu
  read -r wall cpu < <(awk '{ printf "%d %d\n", $1, $2 + $3 }' "$timing")
  local last execs
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  execs=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
  local summary
  summary=$(printf "%s: %ss wall, %ss CPU, %s exec/s, %s" "$target" "$wall" \
            "$cpu" "$execs" \
            "$(sed -nE 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$last")")
  if [ "$status" != 0 ]; then
    summary="$summary, FAILED (exit $status; see $log, inputs in $crashes/)"
    grep -E 'ERROR: |SUMMARY: |runtime error|Test unit written' "$log" | head -5 >&2 || true
  fi
  echo "fuzz: $summary"
  echo "$(date -u +%FT%TZ) $summary" >>"$BUILD/fuzz-runs.log"
  return "$status"
}

case "${1:-}" in
  --list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  --smoke)
    build
    seconds=${FUZZ_SMOKE_SECONDS:-30}
    # Targets run side by side on half the cores (one at a time on two): a fuzzer is one thread.
    parallel=${FUZZ_SMOKE_JOBS:-$(( $(nproc) / 2 > 1 ? $(nproc) / 2 : 1 ))}
    rm -rf "$BUILD/smoke"
    mkdir -p "$BUILD/smoke"
    for target in "${TARGETS[@]}"; do
      while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
      ( status=0
        run "$target" "$seconds" "$BUILD/smoke/$target" "tests/fuzz/corpus/$target" \
          >"$BUILD/smoke/$target.out" 2>&1 || status=$?
        echo "$status" >"$BUILD/smoke/$target.status" ) &
    done
    wait
    failed=()
    for target in "${TARGETS[@]}"; do
      cat "$BUILD/smoke/$target.out"
      [ "$(cat "$BUILD/smoke/$target.status")" = 0 ] || failed+=("$target")
    done
    if [ ${#failed[@]} -gt 0 ]; then
      echo "fuzz: smoke FAILED for: ${failed[*]}" >&2
      exit 1
    fi
    echo "fuzz: smoke ok (${#TARGETS[@]} targets, ${seconds}s each, $parallel at a time)"
    ;;
  ""|-*)
    usage
    ;;
  *)
    target=$1
    minutes=${2:-}
    [[ " ${TARGETS[*]} " == *" $target "* ]] || { echo "fuzz: unknown target '$target'" >&2; usage; }
    [[ "$minutes" =~ ^[0-9]+$ ]] || usage
    build
    run "$target" "$((minutes * 60))" "$BUILD/corpus/$target" "tests/fuzz/corpus/$target"
    ;;
esac
