#!/usr/bin/env bash
# The standard load-test sweep (loadtest/sweep.py) against our server started as
# scripts/serve.sh starts it (SmolLM2-135M-Instruct, the demo adapters, OMP_WAIT_POLICY=PASSIVE),
# on free loopback ports with a throw-away adapter store: 1,024 generated rank-8 q/v adapters
# are uploaded, swept over (adapters 1/16/128/1024 with Zipf(1.0) and uniform, 1-64 users,
# open loop at 0.25-1.25x capacity), and removed. Writes OUT/REPORT.md with the figures.
#   scripts/sweep.sh [OUT] [extra sweep.py flags]     (OUT defaults to build/sweep)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/sweep}"
shift || true
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bash scripts/install.sh >/dev/null
grpc_port=$(free_port)
http_port=$(free_port)
store=$(mktemp -d "${TMPDIR:-/tmp}/loraserve-sweep-store.XXXXXX")
mkdir -p "$out"
LORASERVE_STORE="$store" bash scripts/serve.sh --listen "127.0.0.1:$grpc_port" \
  --http-listen "127.0.0.1:$http_port" --metrics-listen "" >"$out/server.log" 2>&1 &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  # serve.sh execs the server, so $server is the server itself once it started.
  for _ in $(seq 60); do kill -0 "$server" 2>/dev/null || break; sleep 0.5; done
  kill -KILL "$server" 2>/dev/null || true
  rm -rf "$store"
}
trap cleanup EXIT
# serve.sh builds first (ccache makes that quick when the tree is built); the sweep waits for
# the server to answer (--ready-timeout in each run, the uploads wait on the channel).
for _ in $(seq 600); do
  grep -q "serving\|listening" "$out/server.log" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { tail -20 "$out/server.log" >&2; exit 1; }
  sleep 1
done
.venv/bin/python loadtest/sweep.py --server "127.0.0.1:$grpc_port" \
  --admin-token "$(cat .cache/admin-token)" --out-dir "$out" "$@"
