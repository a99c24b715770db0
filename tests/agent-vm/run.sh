#!/usr/bin/env bash
# Guest agent as PID 1 in a real microVM, end to end: builds the guest kernel (cached), the
# static binaries (peapod-vmm, peapod-agent, agent-vm-e2e), the initramfs (agent as /init +
# busybox rootfs) and a busybox rootfs directory shared over virtio-fs, then runs
# agent-vm-e2e where KVM works: directly on hardware KVM, else inside the emulated KVM test
# host (tests/lib/kvm-env.sh; PEAPOD_KVM_MODE=direct|kvm-host forces either). Extra arguments
# go to agent-vm-e2e. Exits non-zero on failure.
# Needs root; PEAPOD_AGENT_VM_CONSOLE=1 prints the guest console on success too; the console
# of the last run stays in target/static/agent-vm-console.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "tests/agent-vm/run.sh: $*" >&2; }
# Sets repo and changes to it.
# shellcheck source=../lib/build-static.sh
source "$here/../lib/build-static.sh"
build_guest_kernel
build_static peapod-agent-vm-e2e guest-agent vmm

initrd="$static_dir/agent-vm-initramfs.cpio.gz"
"$here/make-initramfs.sh" "$initrd" "$bin/peapod-agent" >/dev/null
# The image root shared over virtio-fs (agent-vm-e2e copies it into its working directory).
image_dir="$static_dir/agent-vm-rootfs"
rm -rf "$image_dir"
"$here/make-rootfs.sh" "$image_dir"

# shellcheck source=../lib/kvm-env.sh
source "$repo/tests/lib/kvm-env.sh"
agent_timeout="${PEAPOD_AGENT_VM_TIMEOUT:-300}"
kvm_env_run --timeout "$((agent_timeout + 600))" -- \
    "$bin/agent-vm-e2e" --vmm "$bin/peapod-vmm" --kernel "$vmlinux" --initrd "$initrd" \
    --agent-timeout-secs "$agent_timeout" --image-dir "$image_dir" --console "$static_dir/agent-vm-console.log" "$@"
