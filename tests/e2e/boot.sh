#!/usr/bin/env bash
# Boot end-to-end test from a fresh checkout: builds the guest kernel, the static binaries
# (peapod-vmm, boot-probe, boot-e2e) and the probe initramfs, then runs boot-e2e where KVM
# works (directly on hardware KVM, else inside the emulated KVM test host; see
# tests/lib/kvm-env.sh, PEAPOD_KVM_MODE=direct|kvm-host forces either). Exits non-zero on failure.
# Needs root (apt packages, kernel build cache in /var/cache/peapod unless PEAPOD_CACHE is set).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
log() { echo "tests/e2e/boot.sh: $*" >&2; }

log "building the guest kernel (cached after the first run)"
vmlinux="$(kernel-config/build.sh | tail -n1)"
[[ -s "$vmlinux" ]] || { log "error: kernel build produced no vmlinux"; exit 1; }

log "building static binaries"
target=x86_64-unknown-linux-gnu
static_dir="$repo/target/static"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target" \
    --target-dir "$static_dir" -p vmm -p boot-probe -p peapod-e2e
bin="$static_dir/$target/release"

initrd="$static_dir/boot-probe-initramfs.cpio.gz"
tests/boot-probe/make-initramfs.sh "$initrd" "$bin/boot-probe" >/dev/null

# shellcheck source=../lib/kvm-env.sh
source "$repo/tests/lib/kvm-env.sh"
timeout_s="${PEAPOD_BOOT_E2E_TIMEOUT:-300}"
kvm_env_run --timeout "$((timeout_s + 300))" -- \
    "$bin/boot-e2e" --vmm "$bin/peapod-vmm" --kernel "$vmlinux" --initrd "$initrd" \
    --timeout-secs "$timeout_s" "$@"
