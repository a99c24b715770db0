#!/usr/bin/env bash
# Builds what `peapod run` needs, for tests/pod-e2e/run.sh and scripts/demo.sh. Source it after
# defining `log`; it sources tests/lib/build-static.sh (which sets `repo` and changes to it),
# then `build_pod_assets` builds the guest kernel (cached), the static peapod, peapod-vmm and
# peapod-agent, the product initramfs (rootfs/initramfs/build.sh) and the `launch` helper, and
# sets vmlinux, bin (the static binaries, launch included) and initrd.

# shellcheck source=../lib/build-static.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/build-static.sh"

build_pod_assets() {
    build_guest_kernel
    # peapod links OpenSSL (registry TLS): static libssl/libcrypto from libssl-dev.
    OPENSSL_STATIC=1 build_static peapod vmm guest-agent
    log "building the launch helper and the initramfs"
    rustc --edition 2021 -O -C target-feature=+crt-static --target x86_64-unknown-linux-gnu \
        "$repo/tests/pod-e2e/launch.rs" -o "$bin/launch"
    initrd="$("$repo/rootfs/initramfs/build.sh" "$static_dir/initramfs.cpio.gz" "$bin/peapod-agent" | tail -n1)"
    [[ -s "$initrd" ]] || { log "error: no initramfs"; return 1; }
}
