#!/usr/bin/env bash
# The peapod demo: installs what is needed, builds the guest kernel (cached), and boots a real
# microVM with peapod-vmm: directly on a hardware-backed /dev/kvm, otherwise inside the emulated
# KVM test host. The guest's console, both vsock exchanges and the boot figures are printed.
# Needs root. See README.md for the first-run time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

step "installing Debian packages (scripts/setup.sh)"
./scripts/setup.sh

# shellcheck source=../tests/lib/kvm-env.sh
source tests/lib/kvm-env.sh
mode="$(kvm_env_mode)"
if [[ "$mode" == direct ]]; then
  step "this host's /dev/kvm is hardware-backed: the microVM runs directly"
else
  step "this host's /dev/kvm cannot boot a standard guest: the microVM runs inside the emulated KVM test host"
fi

step "booting a microVM (tests/e2e/boot.sh)"
exec tests/e2e/boot.sh
