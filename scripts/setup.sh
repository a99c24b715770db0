#!/usr/bin/env bash
# Installs the Debian packages peapod's build, demo and tests need (idempotent; root).
# Rust itself comes from the machine's rustup toolchain.
set -euo pipefail

PACKAGES=(
  # guest kernel build (kernel-config/build.sh)
  linux-source-6.1 bc bison flex libelf-dev libssl-dev cpio xz-utils zstd dwarves kmod make gcc libc6-dev perl gzip
  # the emulated KVM test host and the guest images
  qemu-system-x86 busybox-static
  # image store tests: a real registry on loopback, populated with skopeo
  docker-registry skopeo pkg-config
  # misc tools the scripts use
  iproute2 util-linux e2fsprogs
)

# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"
ensure_packages "${PACKAGES[@]}"
echo "setup: all ${#PACKAGES[@]} Debian packages present" >&2
