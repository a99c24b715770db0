#!/usr/bin/env bash
# Builds the emulated KVM test host (a Debian generic 6.1 kernel + a busybox
# initramfs that loads kvm/kvm-amd and 9p) once, cached under
#   ${PEAPOD_CACHE:-/var/cache/peapod}/kvm-host/<key>/{vmlinuz,initramfs.cpio.gz}
# The kernel package is only downloaded and extracted into the cache, never
# installed on this machine. Progress goes to stderr; the last line on stdout
# is the cache directory.
set -euo pipefail

exec 3>&1 1>&2
log() { echo "kvm-host/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${PEAPOD_CACHE:-/var/cache/peapod}/kvm-host"

# shellcheck source=../../scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/apt.sh"
ensure_packages qemu-system-x86 busybox-static kmod cpio gzip

# The generic (not -cloud) kernel: it has kvm-amd and 9p as modules.
kpkg="${PEAPOD_KVM_HOST_KERNEL_PKG:-}"
generic_kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1
}
if [[ -z "$kpkg" ]]; then
    kpkg="$(generic_kernel_pkg)"
    if [[ -z "$kpkg" ]]; then
        log "linux-image-amd64 unknown to apt: running apt-get update"
        apt-get update >&2
        kpkg="$(generic_kernel_pkg)"
    fi
fi
[[ "$kpkg" =~ ^linux-image-6\.1\.0-[0-9]+-amd64$ ]] || die "cannot find the generic linux-image-6.1.0-*-amd64 package (got '$kpkg'; run apt-get update?)"
kver_pkg="$(apt-cache policy "$kpkg" | sed -n 's/^ *Candidate: //p')"
bb_ver="$(dpkg-query -W -f='${Version}' busybox-static)"
script_hash="$(cat "$here/build.sh" "$here/init.sh" | sha256sum | cut -c1-16)"
key="${kpkg#linux-image-}-${kver_pkg}-bb${bb_ver//:/_}-${script_hash}"
out="$cache_root/$key"

if [[ -s "$out/vmlinuz" && -s "$out/initramfs.cpio.gz" ]]; then
    log "cached: $out"
    echo "$out" >&3
    exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [[ -s "$out/vmlinuz" && -s "$out/initramfs.cpio.gz" ]]; then
    echo "$out" >&3
    exit 0
fi

work="$(mktemp -d "$cache_root/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "downloading $kpkg ($kver_pkg)"
(cd "$work" && apt-get download "$kpkg" 2>&1 | grep -v 'unsandboxed' || true)
deb="$(ls "$work"/"$kpkg"_*.deb 2>/dev/null | head -n1)"
[[ -n "$deb" ]] || die "apt-get download $kpkg failed"
log "extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/k"
kver="$(ls "$work/k/lib/modules" | head -n1)"
[[ -n "$kver" && -f "$work/k/boot/vmlinuz-$kver" ]] || die "unexpected package layout in $deb"
depmod -b "$work/k" "$kver"

# Modules to load, in an order modules.dep resolves; missing optional ones are skipped.
wanted=(kvm-amd kvm-intel 9pnet_virtio 9p virtio_pci virtio_net tun veth bridge overlay fuse virtiofs)
moddir="$work/k/lib/modules/$kver"
rootfs="$work/root"
mkdir -p "$rootfs"/{bin,sbin,proc,sys,dev,tmp,run,mnt,etc,lib/modules}
declare -A seen=()
load_order=()
add_module() { # $1 = path relative to $moddir; dependencies first
    local rel="$1" dep deps
    [[ -n "${seen[$rel]:-}" ]] && return 0
    seen[$rel]=1
    deps="$(awk -F':' -v m="$rel" '$1 == m { print $2 }' "$moddir/modules.dep")"
    for dep in $deps; do add_module "$dep"; done
    mkdir -p "$rootfs/lib/modules/$(dirname "$rel")"
    cp "$moddir/$rel" "$rootfs/lib/modules/$rel"
    load_order+=("/lib/modules/$rel")
}
for m in "${wanted[@]}"; do
    rel="$(awk -F':' -v n="$m.ko" '{ k = $1; sub(/.*\//, "", k); if (k == n) { print $1; exit } }' "$moddir/modules.dep")"
    if [[ -z "$rel" ]]; then
        rel="$(awk -F':' -v n="${m//-/_}.ko" '{ k = $1; sub(/.*\//, "", k); if (k == n) { print $1; exit } }' "$moddir/modules.dep")"
    fi
    if [[ -z "$rel" ]]; then
        grep -qE "/${m//-/[-_]}\.ko$" "$moddir/modules.builtin" && continue
        log "warning: module $m not found in $kpkg"
        continue
    fi
    add_module "$rel"
done
printf '%s\n' "${load_order[@]}" >"$rootfs/etc/modules.order"
log "modules: $(printf '%s ' "${load_order[@]##*/}")"

cp /bin/busybox "$rootfs/bin/busybox"
file "$rootfs/bin/busybox" 2>/dev/null | grep -q 'statically linked' || ldd /bin/busybox 2>&1 | grep -q 'not a dynamic' || die "/bin/busybox is not static (install busybox-static)"
for applet in $("$rootfs/bin/busybox" --list); do
    [[ -e "$rootfs/bin/$applet" ]] || ln -s busybox "$rootfs/bin/$applet"
done
cp "$here/init.sh" "$rootfs/init"
chmod 755 "$rootfs/init"

mkdir -p "$work/out"
(cd "$rootfs" && find . -print0 | cpio --null -o -H newc --quiet | gzip -6 >"$work/out/initramfs.cpio.gz")
cp "$work/k/boot/vmlinuz-$kver" "$work/out/vmlinuz"
printf 'kernel_package=%s\nkernel_version=%s\nbusybox=%s\n' "$kpkg" "$kver_pkg" "$bb_ver" >"$work/out/build-info"
rm -rf "$out"
mv "$work/out" "$out"
log "built $out"
echo "$out" >&3
