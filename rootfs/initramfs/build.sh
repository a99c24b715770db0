#!/usr/bin/env bash
# Packs the product guest initramfs:
#   rootfs/initramfs/build.sh OUT [AGENT_BINARY]
# /init is the static peapod-agent (PID 1); /dev/console and /dev/null exist for the kernel and
# the agent before devtmpfs is mounted; /proc /sys /dev /run /tmp /etc are empty mount points and
# /etc/resolv.conf is empty (the agent fills the pod's own copy). No container image is inside:
# image roots reach the guest over virtio-fs. AGENT_BINARY defaults to the static release build
# (target/static/x86_64-unknown-linux-gnu/release/peapod-agent).
# The archive is deterministic (sorted newc cpio, every mtime 0, owner 0:0, renumbered inodes,
# gzip without name or time), so the same agent always gives the same bytes and the file can be
# cached by its content hash. Needs root (mknod). Progress and errors go to stderr; the last
# line on stdout is the absolute path of OUT.
set -euo pipefail
log() { echo "rootfs/initramfs/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 OUT [AGENT_BINARY]" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
out="$1"
agent="${2:-$repo/target/static/x86_64-unknown-linux-gnu/release/peapod-agent}"

[[ -f "$agent" && -x "$agent" ]] || die "agent binary $agent not found (build it static: tests/lib/build-static.sh, build_static guest-agent)"
# A dynamically linked /init cannot start: the initramfs has no libc.
if ldd "$agent" 2>&1 | grep -q '=>'; then
    die "$agent is dynamically linked; build it with RUSTFLAGS='-C target-feature=+crt-static'"
fi
((EUID == 0)) || die "needs root to create /dev/console and /dev/null (mknod)"
for tool in cpio gzip mknod; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install cpio gzip coreutils)"
done

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
mkdir -m 0755 "$root"/{dev,proc,sys,run,etc}
mkdir -m 1777 "$root/tmp"
install -m 0755 "$agent" "$root/init"
mknod -m 0600 "$root/dev/console" c 5 1
mknod -m 0666 "$root/dev/null" c 1 3
install -m 0644 /dev/null "$root/etc/resolv.conf"
find "$root" -exec touch -h -d @0 {} +

mkdir -p "$(dirname "$out")"
out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
tmp="$out_abs.tmp.$$"
(cd "$root" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z |
    cpio --null -o -H newc --quiet --reproducible -R 0:0 | gzip -n -9 >"$tmp") ||
    { rm -f "$tmp"; die "packing the archive failed"; }
mv -f "$tmp" "$out_abs"
log "packed $out_abs ($(stat -c %s "$out_abs") bytes, sha256 $(sha256sum "$out_abs" | cut -c1-16))"
echo "$out_abs"
