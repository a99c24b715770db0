#!/usr/bin/env bash
# `peapod run` end to end: real pods (../shared/examples and our own, in tests/pod-e2e/pods/)
# in real microVMs. Builds the guest kernel (cached), the static peapod, peapod-vmm and
# peapod-agent, the product initramfs (rootfs/initramfs/build.sh) and the `launch` helper, then
# runs tests/pod-e2e/cases.sh where KVM works: directly on hardware KVM, else inside the emulated
# KVM test host (tests/lib/kvm-env.sh; PEAPOD_KVM_MODE=direct|kvm-host forces either).
#   PEAPOD_E2E_ONLY=case1,case2   runs a subset (names: see all_cases in cases.sh)
#   PEAPOD_E2E_TIMEOUT=SECS       limit for the whole run in the test host (default 1800)
#   PEAPOD_E2E_ATTEMPTS=N         attempts per failing case (default 3 in the test host, 1 direct)
# Per-case files (stdout, stderr, guest console, commands) stay in target/pod-e2e/<case>/.
# Exits non-zero when a case failed. Needs root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "tests/pod-e2e/run.sh: $*" >&2; }
t0=$SECONDS
# Sets repo and changes to it; build_pod_assets sets vmlinux, bin and initrd.
# shellcheck source=build.sh
source "$here/build.sh"
build_pod_assets
log "built in $((SECONDS - t0))s"

out="$repo/target/pod-e2e"
mkdir -p "$out"
export PEAPOD_E2E_BIN="$bin" PEAPOD_VMM="$bin/peapod-vmm" PEAPOD_KERNEL="$vmlinux" \
    PEAPOD_INITRD="$initrd" PEAPOD_E2E_OUT="$out"
# shellcheck source=../lib/kvm-env.sh
source "$repo/tests/lib/kvm-env.sh"
# Inside the emulated test host, a failed case runs again (up to 3 attempts in all) when its
# files show a known failure of the emulation (tests/lib/flake-signatures.sh); on hardware KVM a
# case gets one attempt.
if [[ "$(kvm_env_mode)" == direct ]]; then
    export PEAPOD_E2E_ATTEMPTS="${PEAPOD_E2E_ATTEMPTS:-1}"
else
    export PEAPOD_E2E_ATTEMPTS="${PEAPOD_E2E_ATTEMPTS:-3}"
fi
t1=$SECONDS
status=0
kvm_env_run --timeout "${PEAPOD_E2E_TIMEOUT:-1800}" -- sh "$here/cases.sh" || status=$?
# FLAKY lines (a case retried on a known emulation signature) go to the caller's collection.
if [[ -n "${E2E_FLAKY_LOG:-}" && -s "$out/flaky" ]]; then
    grep '^FLAKY ' "$out/flaky" >>"$E2E_FLAKY_LOG" || true
fi
log "cases took $((SECONDS - t1))s (mode $(kvm_env_mode)), $((SECONDS - t0))s in all; exit status $status"
exit "$status"
