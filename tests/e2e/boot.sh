#!/usr/bin/env bash
# Boot end-to-end test from a fresh checkout: builds the guest kernel, the static binaries
# (peapod-vmm, boot-probe, boot-e2e) and the probe initramfs, then runs boot-e2e where KVM
# works (directly on hardware KVM, else inside the emulated KVM test host; see
# tests/lib/kvm-env.sh, PEAPOD_KVM_MODE=direct|kvm-host forces either). Exits non-zero on failure.
# Needs root (apt packages, kernel build cache in /var/cache/peapod unless PEAPOD_CACHE is set).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "tests/e2e/boot.sh: $*" >&2; }
# Sets repo and changes to it.
# shellcheck source=../lib/build-static.sh
source "$here/../lib/build-static.sh"
build_guest_kernel
build_static vmm boot-probe peapod-e2e

initrd="$static_dir/boot-probe-initramfs.cpio.gz"
tests/boot-probe/make-initramfs.sh "$initrd" "$bin/boot-probe" >/dev/null

# shellcheck source=../lib/kvm-env.sh
source "$repo/tests/lib/kvm-env.sh"
timeout_s="${PEAPOD_BOOT_E2E_TIMEOUT:-300}"
kvm_env_run --timeout "$((timeout_s + 300))" -- \
    "$bin/boot-e2e" --vmm "$bin/peapod-vmm" --kernel "$vmlinux" --initrd "$initrd" \
    --timeout-secs "$timeout_s" "$@"
