#!/usr/bin/env bash
# Builds the busybox root file system the agent-vm containers run from:
#   tests/agent-vm/make-rootfs.sh DIR
# DIR (created, must not exist or be empty) gets Debian's busybox-static as /bin/busybox with
# every applet as a relative symlink, /etc/passwd and /etc/group (root, nobody), empty
# /etc/{hostname,hosts,resolv.conf}. make-initramfs.sh packs it as /images/busybox/rootfs;
# run.sh also builds it on the host, where agent-vm-e2e shares a copy over virtio-fs as the
# image root `img0`. PEAPOD_BUSYBOX overrides /bin/busybox.
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
rootfs="$1"
busybox="${PEAPOD_BUSYBOX:-/bin/busybox}"
require_static "$busybox" busybox "apt-get install busybox-static"
if [[ -e "$rootfs" ]] && [[ -n "$(ls -A "$rootfs")" ]]; then
    die "$rootfs exists and is not empty"
fi

mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,dev,sys,root,var,home}
chmod 1777 "$rootfs/tmp"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
# Relative links so they work under any root (the container's overlay after pivot_root).
while read -r applet; do
    name="${applet##*/}"
    [[ "$name" == busybox ]] && continue
    dir="${applet%/*}"
    case "$dir" in
    bin) rel=busybox ;;
    sbin) rel=../bin/busybox ;;
    usr/bin | usr/sbin) rel=../../bin/busybox ;;
    *) continue ;;
    esac
    [[ -e "$rootfs/$applet" ]] || ln -s "$rel" "$rootfs/$applet"
done < <("$busybox" --list-full)
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
for f in hostname hosts resolv.conf; do : >"$rootfs/etc/$f"; done
