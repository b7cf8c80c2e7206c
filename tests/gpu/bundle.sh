#!/usr/bin/env bash
# Builds the GPU check's binaries on this machine and packs them into .gpu-bundle/ with every
# shared library they load that is not glibc's or CUDA's, so the GPU machine (nvcc and the CUDA
# runtime, but none of absl, GTest, OpenBLAS, ...) runs them without configuring: tests/gpu/run.sh
# uses the bundle when it finds one. The device tool carries it: carry [".gpu-bundle"].
# Usage: tests/gpu/bundle.sh [EXTRA_TARGET...]   (extra targets also from env GPU_TARGETS)
#   Always: kernels_cuda_plan_test lora_kernels_gpu_test lora_gpu_bench. An extra name with no
#   such target in this checkout (written on another branch) is skipped and listed in MANIFEST.
# Environment: BUNDLE_DIR (default .gpu-bundle), JOBS (default 1), BUNDLE_LIMIT_MIB (default 40:
#   the bundle and the working tree share the device tool's 64 MiB).
# Layout: bin/ (stripped), lib/ (libraries over 1 MiB as NAME.xz; run.sh unpacks them),
#   lib/compat/ (libstdc++, libgcc_s: used only where the GPU machine's own are too old),
#   MANIFEST (what, from where, for whom), SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/../.."

BUNDLE_DIR=${BUNDLE_DIR:-.gpu-bundle}
JOBS=${JOBS:-1}
LIMIT_MIB=${BUNDLE_LIMIT_MIB:-40}
BUILD_DIR=build  # the default preset's binaryDir
BASE_TARGETS=(kernels_cuda_plan_test lora_kernels_gpu_test lora_gpu_bench cuda_kernels_gpu_test
  attention_bench cuda_backend_gpu_test loraserve-cuda)
# shellcheck disable=SC2206  # GPU_TARGETS is a space-separated list
EXTRA_TARGETS=(cuda_decode_bench "$@" ${GPU_TARGETS:-})
LOCK=/tmp/loraserve-build.lock

export CCACHE_BASEDIR=$PWD
flock "$LOCK" nice cmake --preset default >/dev/null
ALL_TARGETS=$(flock "$LOCK" cmake --build "$BUILD_DIR" --target help)
has_target() { grep -qx "$1: phony" <<<"$ALL_TARGETS"; }
if ! has_target loraserve_kernels_cuda; then
  echo "bundle.sh: the default preset found no nvcc, so there are no CUDA targets to bundle" >&2
  exit 1
fi
# The executable a target links: the input of its phony edge, relative to BUILD_DIR.
# A target named like its output (loraserve) is that file itself, with no phony edge.
target_binary() {
  ninja -C "$BUILD_DIR" -t query "$1" |
    awk -v t="$1" '/^  input: phony/ { getline; print $1; found = 1; exit }
                   END { if (!found) print t }'
}

TARGETS=("${BASE_TARGETS[@]}")
SKIPPED=()
for t in "${EXTRA_TARGETS[@]}"; do
  [[ " ${TARGETS[*]} " == *" $t "* ]] && continue
  if has_target "$t"; then TARGETS+=("$t"); else SKIPPED+=("$t"); fi
done
for t in "${SKIPPED[@]}"; do echo "bundle.sh: no target $t in this checkout; skipped"; done

echo "bundle.sh: building ${TARGETS[*]}"
BUILD_LOG=$(mktemp)
if ! flock "$LOCK" nice cmake --build --preset default -j"$JOBS" --target "${TARGETS[@]}" \
  >"$BUILD_LOG" 2>&1; then
  grep -E ' error|FAILED' "$BUILD_LOG" | head -20 >&2
  echo "bundle.sh: build failed (full log: $BUILD_LOG)" >&2
  exit 1
fi
rm -f "$BUILD_LOG"

rm -rf "$BUNDLE_DIR"
mkdir -p "$BUNDLE_DIR/bin" "$BUNDLE_DIR/lib/compat"
# Provided by the GPU machine: glibc and the loader, the CUDA driver and toolkit runtime.
SYSTEM_LIBS='^(linux-vdso|ld-linux|libc|libm|libpthread|libdl|librt|libcuda|libcudart|libcublas|libcublasLt|libnvidia-[a-z-]*)\.so'
COMPAT_LIBS='^(libstdc\+\+|libgcc_s)\.so'
declare -A LIB_SOURCE LIB_USERS
MANIFEST_BINS=()
for t in "${TARGETS[@]}"; do
  rel=$(target_binary "$t")
  bin="$BUILD_DIR/$rel"
  if [[ -z $rel || ! -x $bin ]]; then
    echo "bundle.sh: built $t but found no executable for it" >&2
    exit 1
  fi
  cp "$bin" "$BUNDLE_DIR/bin/$t"
  strip --strip-unneeded "$BUNDLE_DIR/bin/$t"
  MANIFEST_BINS+=("bin/$t  from $rel")
  while read -r name arrow path _; do
    [[ $arrow == "=>" ]] || continue
    [[ $name =~ $SYSTEM_LIBS ]] && continue
    if [[ $path == "not" ]]; then
      echo "bundle.sh: $t needs $name, which is not found here" >&2
      exit 1
    fi
    LIB_SOURCE[$name]=$path
    LIB_USERS[$name]="${LIB_USERS[$name]:-}${LIB_USERS[$name]:+ }$t"
  done < <(ldd "$bin")
done

for name in "${!LIB_SOURCE[@]}"; do
  dest="$BUNDLE_DIR/lib"
  [[ $name =~ $COMPAT_LIBS ]] && dest="$BUNDLE_DIR/lib/compat"
  cp -L "${LIB_SOURCE[$name]}" "$dest/$name"
  chmod u+w "$dest/$name"
  strip --strip-unneeded "$dest/$name"
  if (($(stat -c %s "$dest/$name") > 1048576)); then xz -T1 -6 "$dest/$name"; fi
done

{
  echo "loraserve GPU bundle: the binaries of tests/gpu/run.sh and the libraries they load"
  echo "built: $(date -u +%FT%TZ) on $(uname -srm), $(ldd --version | head -1)"
  echo "source: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' plus uncommitted changes')"
  echo "nvcc: $(grep -h -E 'set\(CMAKE_CUDA_COMPILER(_VERSION)? ' \
    "$BUILD_DIR"/CMakeFiles/*/CMakeCUDACompiler.cmake | cut -d'"' -f2 | paste -sd' ')"
  echo "cuda code: $(grep -o -- '--generate-code=[^ ]*' "$BUILD_DIR/compile_commands.json" |
    sort -u | sed 's/--generate-code=//' | paste -sd' ')"
  echo "the GPU machine must provide: glibc >= this one's, libcudart.so.13 (CUDA 13), the driver"
  echo
  echo "binaries:"
  printf '  %s\n' "${MANIFEST_BINS[@]}"
  echo "libraries (NAME.xz: compressed; compat/: used only if the system's are too old):"
  for name in $(printf '%s\n' "${!LIB_SOURCE[@]}" | sort); do
    for stored in "$name" "$name.xz" "compat/$name" "compat/$name.xz"; do
      [[ -f $BUNDLE_DIR/lib/$stored ]] && break
    done
    echo "  $stored  from ${LIB_SOURCE[$name]}  for ${LIB_USERS[$name]}"
  done
  if ((${#SKIPPED[@]})); then echo "skipped (no such target here): ${SKIPPED[*]}"; fi
} >"$BUNDLE_DIR/MANIFEST"
(cd "$BUNDLE_DIR" && find bin lib -type f | sort | xargs sha256sum >SHA256SUMS)

total_kib=$(du -sk "$BUNDLE_DIR" | cut -f1)
echo "bundle.sh: wrote $BUNDLE_DIR ($((total_kib / 1024)).$(((total_kib % 1024) * 10 / 1024)) MiB):"
sed -n '/^binaries:/,$p' "$BUNDLE_DIR/MANIFEST"
if ((total_kib > LIMIT_MIB * 1024)); then
  echo "bundle.sh: the bundle is over BUNDLE_LIMIT_MIB=$LIMIT_MIB MiB; the device tool carries" \
    "at most 64 MiB together with the working tree" >&2
  exit 1
fi
