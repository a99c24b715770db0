#!/usr/bin/env bash
# Packs the guest initramfs of the agent-vm end-to-end test:
#   tests/agent-vm/make-initramfs.sh OUT [AGENT_BINARY]
# /init is the static peapod-agent (PID 1); /images/busybox/rootfs is a busybox root file
# system for the containers (make-rootfs.sh: Debian's busybox-static, every applet a relative
# symlink), used by the pods that do not take their image root over virtio-fs. AGENT_BINARY
# defaults to the static release build
# (target/static/x86_64-unknown-linux-gnu/release/peapod-agent).
# PEAPOD_BUSYBOX overrides /bin/busybox.
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 OUT [AGENT_BINARY]" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
repo="$(cd "$here/../.." && pwd)"
out="$1"
agent="${2:-$repo/target/static/x86_64-unknown-linux-gnu/release/peapod-agent}"
require_static "$agent" "agent binary" "build it static first: build_static in tests/lib/build-static.sh"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{dev,proc,sys,run,tmp,etc}
install -m 0755 "$agent" "$root/init"
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3
: >"$root/etc/resolv.conf"

"$here/make-rootfs.sh" "$root/images/busybox/rootfs"

mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0 | gzip -6 >"$out_abs.tmp")
mv "$out_abs.tmp" "$out_abs"
echo "$out_abs"
