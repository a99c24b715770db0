#!/usr/bin/env bash
# Boot benchmark: builds what `peapod run` needs (guest kernel cached, static binaries, the
# initramfs), then runs `peapod bench boot -n N` (default 20) where KVM works: directly on a
# hardware-backed /dev/kvm, else inside the emulated KVM test host, whose absolute times are
# 10-50x hardware (see docs/performance.md). Extra arguments go to `peapod bench boot`
# (e.g. `-f pod.yaml`); the guest boots with `quiet` as in docs/performance.md. Prints p50/p95 per phase and memory per pod; asserts
# nothing. Needs root.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "scripts/bench-boot.sh: $*" >&2; }
# shellcheck source=../tests/pod-e2e/build.sh
source "$here/../tests/pod-e2e/build.sh"
build_pod_assets
runs="${PEAPOD_BENCH_RUNS:-20}"
# shellcheck source=../tests/lib/kvm-env.sh
source "$repo/tests/lib/kvm-env.sh"
log "running $runs boots ($(kvm_env_mode))"
kvm_env_run --timeout "$((runs * 120 + 300))" -- env PEAPOD_ROOT=/tmp/peapod-bench \
    PEAPOD_VMM="$bin/peapod-vmm" PEAPOD_KERNEL="$vmlinux" PEAPOD_INITRD="$initrd" \
    "$bin/peapod" bench boot -n "$runs" --kernel-args quiet "$@"
