#!/usr/bin/env bash
# Runs every peapod test: formatting and lints, unit and host-mode integration tests,
# and the end-to-end tests that boot real microVMs (inside the emulated KVM test host on
# machines whose /dev/kvm cannot boot a standard guest). Needs root. See README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n=== [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

step "installing Debian packages (scripts/setup.sh)"
./scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and host-mode integration tests (cargo test)"
cargo test --workspace --locked -- --test-threads=2

# The end-to-end tests boot real microVMs: directly where /dev/kvm is hardware-backed, else
# inside the emulated KVM test host (tests/lib/kvm-env.sh decides).
# shellcheck source=../tests/lib/kvm-env.sh
source "$root/tests/lib/kvm-env.sh"
kvm_mode="$(kvm_env_mode)"
# shellcheck source=lib/e2e-retry.sh
source "$root/scripts/lib/e2e-retry.sh"
export E2E_CONSOLE_DIRS=("$root/target" "${PEAPOD_CACHE:-/var/cache/peapod}/vmm-smoke")
# A suite (pod-e2e: a case) runs again only when it failed with a known failure of the emulated
# test host (tests/lib/flake-signatures.sh); each retry prints `FLAKY <name>: <signature>`,
# collected here and counted at the end. Any other failure fails the run at once.
export E2E_FLAKY_LOG="$root/target/flaky.log"
mkdir -p "$root/target"
: >"$E2E_FLAKY_LOG"
flaky_summary() {
    local n
    n="$(grep -c '^FLAKY ' "$E2E_FLAKY_LOG" 2>/dev/null || true)"
    echo "FLAKY retries in this run: ${n:-0}" >&2
    grep '^FLAKY ' "$E2E_FLAKY_LOG" >&2 || true
}
trap flaky_summary EXIT

step "end-to-end: boot a real microVM, console + vsock both ways (tests/e2e/boot.sh, mode $kvm_mode)"
e2e_run boot "$root/tests/e2e/boot.sh"

step "end-to-end: every way a microVM ends, SMP, big memory, console input (vmm/scripts/boot-smoke.sh)"
smoke_args=()
[[ "$kvm_mode" == direct ]] && smoke_args+=(--direct)
e2e_run boot-smoke "$root/vmm/scripts/boot-smoke.sh" "${smoke_args[@]}"

step "end-to-end: the guest agent as PID 1 runs pods in a microVM (tests/agent-vm/run.sh)"
e2e_run agent-vm "$root/tests/agent-vm/run.sh"

step "end-to-end: peapod run: every example and real pods from real images in microVMs (tests/pod-e2e/run.sh)"
# pod-e2e retries a failed case itself, on a known signature only (tests/pod-e2e/cases.sh).
"$root/tests/pod-e2e/run.sh"

step "all tests passed"
