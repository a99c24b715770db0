#!/usr/bin/env bash
# Packs the static boot probe as /init of a gzip'd newc initramfs:
#   tests/boot-probe/make-initramfs.sh OUT [PROBE_BINARY]
# PROBE_BINARY defaults to the static release build
# (target/static/x86_64-unknown-linux-gnu/release/boot-probe).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 OUT [PROBE_BINARY]" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$1"
probe="${2:-$repo/target/static/x86_64-unknown-linux-gnu/release/boot-probe}"
[[ -x "$probe" ]] || { echo "make-initramfs.sh: probe binary $probe not found (build it static first)" >&2; exit 1; }
if ldd "$probe" 2>&1 | grep -q '=>'; then
    echo "make-initramfs.sh: $probe is dynamically linked; the initramfs has no libc" >&2
    exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{dev,proc,sys,tmp}
install -m 0755 "$probe" "$root/init"
# /dev/console lets the kernel give /init its stdio; without root the probe opens it itself.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0 | gzip -9 >"$out_abs.tmp")
mv "$out_abs.tmp" "$out_abs"
echo "$out_abs"
