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

step "end-to-end: boot a real microVM (tests/e2e/boot.sh)"
"$root/tests/e2e/boot.sh"

step "all tests passed"
