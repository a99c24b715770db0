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

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} Debian packages present" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages (${missing[*]}); run this script as root" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
echo "setup: done" >&2
