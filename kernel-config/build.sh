#!/usr/bin/env bash
# Builds the peapod guest kernel (ELF vmlinux) from Debian's linux-source-6.1
# with the microvm.config fragment on an allnoconfig base, and caches it at
#   ${PEAPOD_CACHE:-/var/cache/peapod}/kernel/<source-version>-<sha256(fragment)[:16]>/vmlinux
# A second run with the same key is instant. Progress goes to stderr; the last
# line on stdout is the vmlinux path.
set -euo pipefail

exec 3>&1 1>&2
log() { echo "kernel-config/build.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fragment="$here/microvm.config"
[[ -f "$fragment" ]] || die "fragment $fragment not found"
cache_root="${PEAPOD_CACHE:-/var/cache/peapod}/kernel"

# Build dependencies (Debian package names).
# shellcheck source=../scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib/apt.sh"
ensure_packages linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio xz-utils dwarves make gcc libc6-dev perl

src_version="$(dpkg-query -W -f='${Version}' linux-source-6.1)"
frag_hash="$(sha256sum "$fragment" | cut -c1-16)"
key="${src_version}-${frag_hash}"
out_dir="$cache_root/$key"
vmlinux="$out_dir/vmlinux"

if [[ -s "$vmlinux" ]]; then
    log "cached: $vmlinux"
    echo "$vmlinux" >&3
    exit 0
fi

mkdir -p "$cache_root"
# One build at a time per cache (concurrent callers wait, then find the result).
exec 9>"$cache_root/.lock"
flock 9
if [[ -s "$vmlinux" ]]; then
    log "cached (built by a concurrent run): $vmlinux"
    echo "$vmlinux" >&3
    exit 0
fi

tarball=/usr/src/linux-source-6.1.tar.xz
[[ -f "$tarball" ]] || die "$tarball missing although linux-source-6.1 is installed"
src_dir="$cache_root/src-$src_version/linux-source-6.1"
if [[ ! -f "$src_dir/.peapod-unpacked" ]]; then
    log "unpacking $tarball"
    rm -rf "$cache_root/src-$src_version"
    mkdir -p "$cache_root/src-$src_version"
    tar -xf "$tarball" -C "$cache_root/src-$src_version"
    touch "$src_dir/.peapod-unpacked"
fi

build_dir="$cache_root/build-$key"
rm -rf "$build_dir"
mkdir -p "$build_dir"
export ARCH=x86_64

log "merging $fragment onto allnoconfig"
(cd "$src_dir" && scripts/kconfig/merge_config.sh -n -O "$build_dir" "$fragment")

# merge_config.sh only warns when Kconfig drops an option (missing dependency):
# check every requested option against the final .config and fail loudly.
config="$build_dir/.config"
dropped=()
while IFS= read -r line; do
    if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        grep -qxF -- "$line" "$config" || dropped+=("$line (got: $(grep -E "^(# )?${BASH_REMATCH[1]}[= ]" "$config" || echo 'absent'))")
    elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        if grep -qE "^${BASH_REMATCH[1]}=" "$config"; then
            dropped+=("$line (got: $(grep -E "^${BASH_REMATCH[1]}=" "$config"))")
        fi
    fi
done <"$fragment"
if ((${#dropped[@]})); then
    for d in "${dropped[@]}"; do log "option not as requested: $d"; done
    die "${#dropped[@]} option(s) of $fragment did not end up in .config (missing dependencies?)"
fi
log "all $(grep -cE '^(CONFIG_|# CONFIG_.* is not set)' "$fragment") options of the fragment are set as requested"

jobs="$(nproc)"
log "building vmlinux with make -j$jobs (source $src_version)"
start=$(date +%s)
make -C "$src_dir" O="$build_dir" -j"$jobs" vmlinux
end=$(date +%s)

mkdir -p "$out_dir"
cp "$config" "$out_dir/config"
cp "$build_dir/vmlinux" "$out_dir/vmlinux.tmp"
mv "$out_dir/vmlinux.tmp" "$vmlinux"
size=$(stat -c %s "$vmlinux")
printf 'build_seconds=%s\nvmlinux_bytes=%s\nsource_version=%s\nfragment_sha256_16=%s\n' \
    "$((end - start))" "$size" "$src_version" "$frag_hash" >"$out_dir/build-info"
log "built in $((end - start)) s, vmlinux $size bytes"
rm -rf "$build_dir"
echo "$vmlinux" >&3
