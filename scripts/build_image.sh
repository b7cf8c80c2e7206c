#!/usr/bin/env bash
# Builds the CPU container image (deploy/Dockerfile.cpu) with no Docker daemon and no registry,
# then starts the server from the built image and checks it answers: the real build-and-run
# check of docs/DEPLOY.md.
#
#   1. debootstrap a Debian 12 (bookworm) minbase from Debian's mirror into a tarball, cached
#      under ${LORASERVE_CACHE:-.cache}/images/;
#   2. import it as the image localhost/debian:12 (buildah from scratch + add + commit), the
#      base the Dockerfile names;
#   3. buildah bud --isolation chroot -f deploy/Dockerfile.cpu -t localhost/loraserve:cpu .
#      (under /tmp/loraserve-build.lock: it compiles the server, ~10+ minutes on 2 cores);
#   4. buildah from + buildah run --isolation chroot --network host the image's own ENTRYPOINT
#      with its listen addresses moved to free loopback ports; wait for GET /health = 200, send
#      one POST /v1/chat/completions with curl and check choices[0].message.content; stop it.
#
# Options:
#   --skip-build      reuse the image already built (steps 1-3 are skipped)
#   --skip-run        build only
#   --allow-grpc-only if the binary has no HTTP server yet (no --http-listen in `serve --help`),
#                     check the image over gRPC instead of failing: drop the flags it lacks,
#                     wait for /metrics on the metrics port and send one generation with
#                     `loraserve generate --server` from inside the image. Says so loudly.
#   --binary PATH     run PATH (a loraserve linked on Debian 12) in the image instead of the
#                     image's own binary, in a throwaway container: checks a local build in the
#                     image's runtime (its libraries, user, volume, ENTRYPOINT) without
#                     rebuilding the image. The image itself is not changed.
# Env: IMAGE (default localhost/loraserve:cpu), BASE_IMAGE (default localhost/debian:12),
#      DEBIAN_MIRROR (default http://deb.debian.org/debian), LORASERVE_CACHE.
# Needs root (buildah and debootstrap); installs buildah, debootstrap and curl if missing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

IMAGE="${IMAGE:-localhost/loraserve:cpu}"
BASE_IMAGE="${BASE_IMAGE:-localhost/debian:12}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="${LORASERVE_CACHE:-$ROOT/.cache}"
LOCK=/tmp/loraserve-build.lock
skip_build=0 skip_run=0 allow_grpc_only=0 binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-build) skip_build=1 ;;
    --skip-run) skip_run=1 ;;
    --allow-grpc-only) allow_grpc_only=1 ;;
    --binary) binary="$(realpath "${2:?--binary needs a path}")"; shift ;;
    *) echo "build_image: unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

log() { echo "build_image: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || die "needs root (buildah, debootstrap) and there is no sudo"
  SUDO="sudo"
fi
missing=()
for tool in buildah:buildah debootstrap:debootstrap curl:curl python3:python3 flock:util-linux \
            ss:iproute2; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
BUILDAH=(buildah)
[ -z "$SUDO" ] || BUILDAH=(sudo buildah)

# The model folder goes in as the `model` build context (see deploy/Dockerfile.cpu for why).
model_dir() {
  local out
  out=$(bash scripts/setup_default_model.sh) \
    || die "the default model could not be prepared: run scripts/install.sh first"
  tail -n1 <<<"$out"
}

# Steps 1 and 2: the base image, from a cached debootstrap tarball.
make_base() {
  local tarball="$CACHE/images/debian-12-minbase-amd64.tar.gz"
  if [ ! -s "$tarball" ]; then
    mkdir -p "$(dirname "$tarball")"
    local rootfs
    rootfs=$(mktemp -d /tmp/loraserve-debootstrap.XXXXXX)
    log "debootstrap bookworm minbase from $MIRROR (a few minutes)"
    $SUDO debootstrap --variant=minbase --arch=amd64 bookworm "$rootfs" "$MIRROR" \
      > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
    # Updates and security fixes too, as the official debian:12 image has.
    $SUDO tee "$rootfs/etc/apt/sources.list" >/dev/null <<EOF
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
    $SUDO chroot "$rootfs" apt-get clean
    $SUDO tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
      --exclude='./sys/*' --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*' \
      -czf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    $SUDO rm -rf "$rootfs" "$rootfs.log"
  fi
  local sha
  sha=$(sha256sum "$tarball" | cut -d' ' -f1)
  local have
  have=$("${BUILDAH[@]}" inspect --type image \
           --format '{{index .OCIv1.Config.Labels "loraserve.base.sha256"}}' "$BASE_IMAGE" \
           2>/dev/null || true)
  if [ "$have" != "$sha" ]; then
    log "importing $tarball as $BASE_IMAGE"
    local ctr
    ctr=$("${BUILDAH[@]}" from scratch)
    "${BUILDAH[@]}" add "$ctr" "$tarball" / >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --cmd /bin/bash --label "loraserve.base.sha256=$sha" "$ctr"
    "${BUILDAH[@]}" commit -q --rm "$ctr" "$BASE_IMAGE" >/dev/null
  fi
  log "base image $BASE_IMAGE ready (rootfs sha256 $sha)"
}

# Step 3.
build_image() {
  local model
  model=$(model_dir)
  log "buildah bud -f deploy/Dockerfile.cpu -t $IMAGE (waits for $LOCK, then compiles)"
  local start=$SECONDS
  flock "$LOCK" "${BUILDAH[@]}" bud --isolation chroot --layers --network host --format docker \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-context model="$model" \
    -f deploy/Dockerfile.cpu -t "$IMAGE" . || die "buildah bud failed"
  log "image $IMAGE built in $((SECONDS - start)) s"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The image's ENTRYPOINT as the command to run here, one argument per line: every listen address
# moved to a free loopback port (--network host shares this machine's network, where only
# loopback may be used), and, in --allow-grpc-only mode, the flags this binary's `serve --help`
# lacks dropped (with their values: every ENTRYPOINT flag takes one) and /metrics given its own
# listener. Dropped flags are reported on stderr.
run_command() {
  "${BUILDAH[@]}" inspect --type image "$IMAGE" | python3 -c '
import json, re, sys
entry = json.load(sys.stdin)["OCIv1"]["config"]["Entrypoint"]
help_text, http, grpc, metrics, have_http = sys.argv[1:6]
known = set(re.findall(r"^\s+(?:-\w,)?(--[a-z0-9-]+)", help_text, re.M))
ports = {"--http-listen": http, "--listen": grpc}
if have_http == "0":
    ports["--metrics-listen"] = metrics
out, dropped, i = entry[:2], [], 2
while i < len(entry):
    flag, value = entry[i], entry[i + 1]
    i += 2
    if flag not in known:
        dropped.append(flag)
        continue
    out += [flag, "127.0.0.1:" + ports[flag] if flag in ports else value]
if dropped:
    print("build_image: NOTE: dropped ENTRYPOINT flags this binary lacks: " + " ".join(dropped),
          file=sys.stderr)
print("\n".join(out))' "$@"
}

ctr="" server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$ctr" ]; then "${BUILDAH[@]}" rm "$ctr" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# The pid of whatever listens on 127.0.0.1:PORT (the server, a child of `buildah run`).
listener_pid() { ss -Hltnp "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1; }

# Stops the server the way Kubernetes does (SIGTERM, then it drains) and waits for it to exit.
stop_server() {
  local port="$1" pid
  pid=$(listener_pid "$port")
  [ -n "$pid" ] && kill -TERM "$pid"
  for _ in $(seq 1 60); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      server_pid=""
      log "server stopped on SIGTERM"
      return 0
    fi
    sleep 0.5
  done
  die "the server did not exit within 30 s of SIGTERM"
}

wait_http_200() {
  local url="$1" what="$2"
  for _ in $(seq 1 240); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      tail -20 "$run_log" >&2
      die "the server exited before $what"
    fi
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url")" = 200 ] && return 0
    sleep 0.5
  done
  tail -20 "$run_log" >&2
  die "$url did not answer 200 within 120 s"
}

# Step 4.
run_image() {
  local help http_port grpc_port metrics_port
  ctr=$("${BUILDAH[@]}" from -q "$IMAGE")
  if [ -n "$binary" ]; then
    log "NOTE: running $binary in place of the image's own loraserve"
    "${BUILDAH[@]}" copy --chmod 0755 "$ctr" "$binary" /usr/local/bin/loraserve >/dev/null
  fi
  local libs
  libs=$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- ldd /usr/local/bin/loraserve)
  ! grep 'not found' <<<"$libs" || die "the image lacks libraries loraserve needs"
  help=$("${BUILDAH[@]}" run --isolation chroot "$ctr" -- loraserve serve --help)
  http_port=$(free_port) grpc_port=$(free_port) metrics_port=$(free_port)
  local have_http=1
  grep -q -- '--http-listen' <<<"$help" || have_http=0
  if [ "$have_http" = 0 ] && [ "$allow_grpc_only" = 0 ]; then
    die "the image's loraserve has no --http-listen (HTTP server not built in yet), so its
  ENTRYPOINT cannot start; rerun with --allow-grpc-only to check it over gRPC instead"
  fi
  local -a cmd=()
  mapfile -t cmd < <(run_command "$help" "$http_port" "$grpc_port" "$metrics_port" "$have_http")
  [ "${cmd[0]:-}" = loraserve ] || die "could not read the ENTRYPOINT of $IMAGE"
  run_log=$(mktemp /tmp/loraserve-image-run.XXXXXX.log)
  log "running in the image: ${cmd[*]}"
  "${BUILDAH[@]}" run --isolation chroot --network host "$ctr" -- "${cmd[@]}" > "$run_log" 2>&1 &
  server_pid=$!
  if [ "$have_http" = 1 ]; then
    wait_http_200 "http://127.0.0.1:$http_port/health" "/health answered 200"
    log "GET /health = 200"
    # The base model under the name the ENTRYPOINT serves it as.
    local model="" body i
    for ((i = 0; i + 1 < ${#cmd[@]}; i++)); do
      [ "${cmd[$i]}" = --served-model-name ] && model="${cmd[$((i + 1))]}"
    done
    [ -n "$model" ] || die "the ENTRYPOINT sets no --served-model-name"
    body=$(curl -sS --fail-with-body --max-time 120 -H 'Content-Type: application/json' \
      "http://127.0.0.1:$http_port/v1/chat/completions" -d "{\"model\": \"$model\",
        \"messages\": [{\"role\": \"user\", \"content\": \"Say hello.\"}], \"max_tokens\": 8}") \
      || die "POST /v1/chat/completions failed: $body"
    python3 -c 'import json, sys
r = json.loads(sys.argv[1]); c = r["choices"][0]["message"]["content"]
assert isinstance(c, str) and c, r
print("build_image: chat reply:", repr(c), file=sys.stderr)' "$body" \
      || die "the chat response has no choices[0].message.content: $body"
    stop_server "$http_port"
    log "OK: $IMAGE built, started, answered /health and a chat request, stopped on SIGTERM"
  else
    log "PARTIAL CHECK: no HTTP server in this build; /health and /v1/chat/completions NOT checked"
    wait_http_200 "http://127.0.0.1:$metrics_port/metrics" "/metrics answered 200"
    log "GET /metrics (metrics listener) = 200"
    # The metrics listener is up before the weights are: retry while gRPC says UNAVAILABLE.
    local out="" attempt
    for attempt in $(seq 1 120); do
      if out=$("${BUILDAH[@]}" run --isolation chroot --network host "$ctr" -- loraserve generate \
               --server "127.0.0.1:$grpc_port" --prompt "Hello, my name is" --max-tokens 8 \
               --timeout 120 2>&1); then
        break
      fi
      if ! grep -q UNAVAILABLE <<<"$out" || [ "$attempt" -eq 120 ]; then
        die "gRPC generation through the image's server failed: $out"
      fi
      sleep 1
    done
    [ -n "$out" ] || die "gRPC generation returned no text"
    log "gRPC generate reply: $(head -c 200 <<<"$out")"
    stop_server "$grpc_port"
    log "OK (gRPC only): $IMAGE built, started, answered /metrics and a gRPC generation, stopped"
  fi
}

if [ "$skip_build" = 0 ]; then
  make_base
  build_image
fi
[ "$skip_run" = 1 ] || run_image
