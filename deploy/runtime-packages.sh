#!/usr/bin/env bash
# Prints, one per line, the dpkg packages that hold the shared libraries a binary links
# directly (its ELF NEEDED entries), so an image's runtime stage installs exactly those: apt
# brings their own dependencies. Run in the build stage, where the binary was linked; fails if
# a library resolves to no package, so a missing runtime library stops the image build instead
# of the container's first start.
# Usage: runtime-packages.sh BINARY
set -euo pipefail
bin="$1"
ldd_out=$(ldd "$bin")
readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | while read -r so; do
  path=$(awk -v so="$so" '$1 == so && $2 == "=>" {print $3}' <<<"$ldd_out")
  if [ -z "$path" ] || [ "$path" = "not" ]; then
    echo "runtime-packages: $so (needed by $bin) is not found by the loader" >&2
    exit 1
  fi
  real=$(realpath "$path")
  pkg=""
  # Merged /usr: dpkg may record a file under /lib or /usr/lib, whichever its package ships.
  for p in "$path" "$real" "${path#/usr}" "/usr$path" "${real#/usr}" "/usr$real"; do
    pkg=$(dpkg-query -S "$p" 2>/dev/null | head -n1 | cut -d: -f1) || true
    [ -n "$pkg" ] && break
  done
  if [ -z "$pkg" ]; then
    echo "runtime-packages: no package holds $path ($so, needed by $bin)" >&2
    exit 1
  fi
  echo "$pkg"
done | sort -u
