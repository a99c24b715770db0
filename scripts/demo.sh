#!/usr/bin/env bash
# The peapod demo: installs what is needed, builds the guest kernel (cached), the static peapod,
# peapod-vmm and peapod-agent and the guest initramfs, then runs a real pod end to end:
# `peapod run --rm -f tests/pod-e2e/pods/two-containers.yaml` (a copy of
# ../shared/examples/two-containers.yaml): two containers sharing an emptyDir and localhost,
# each in the pod's own microVM; then `peapod exec` into it, then Ctrl-C. The microVM runs
# directly on a hardware-backed /dev/kvm, otherwise inside the emulated KVM test host; the demo
# says which. Needs root. See README.md for the first-run time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
log() { echo "demo: $*" >&2; }

step "installing Debian packages (scripts/setup.sh)"
./scripts/setup.sh

# shellcheck source-path=SCRIPTDIR/.. source=tests/lib/kvm-env.sh
source tests/lib/kvm-env.sh
mode="$(kvm_env_mode)"

step "building the guest kernel (cached), peapod, peapod-vmm, peapod-agent (static) and the initramfs"
# Sets repo, vmlinux, bin, initrd.
# shellcheck source=tests/pod-e2e/build.sh
source tests/pod-e2e/build.sh
build_pod_assets

if [[ "$mode" == direct ]]; then
    step "this host's /dev/kvm is hardware-backed: the pod's microVM runs directly here"
else
    step "this host's /dev/kvm cannot boot a standard guest: the pod's microVM runs inside the emulated KVM test host (QEMU TCG, so boots take seconds, not milliseconds)"
fi

# shellcheck disable=SC2154 # build_pod_assets sets bin, vmlinux and initrd
export PEAPOD_E2E_BIN="$bin" PEAPOD_VMM="$bin/peapod-vmm" PEAPOD_KERNEL="$vmlinux" PEAPOD_INITRD="$initrd"
step "running the pod (mode $mode)"
kvm_env_run --timeout 900 -- sh tests/pod-e2e/demo-pod.sh
step "demo finished (mode $mode: $([[ "$mode" == direct ]] && echo "directly on this host's KVM" || echo "inside the KVM test host"))"
