#!/usr/bin/env bash
# Build steps shared by the microVM end-to-end scripts (tests/e2e/boot.sh,
# tests/agent-vm/run.sh). Source this file, define `log`, then:
#   build_guest_kernel      -> sets `vmlinux` (kernel-config/build.sh, cached after the first run)
#   build_static PKG...     -> static release build of the cargo packages into target/static;
#                              sets `static_dir` and `bin` (the directory of the binaries)
# Sourcing it sets `repo` (the repository root) and changes to it.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo" || return 1

build_guest_kernel() {
    log "building the guest kernel (cached after the first run)"
    vmlinux="$(kernel-config/build.sh | tail -n1)"
    [[ -s "$vmlinux" ]] || { log "error: kernel build produced no vmlinux"; return 1; }
}

build_static() {
    log "building static binaries"
    local target=x86_64-unknown-linux-gnu pkgs=() p
    static_dir="$repo/target/static"
    for p in "$@"; do pkgs+=(-p "$p"); done
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target" \
        --target-dir "$static_dir" "${pkgs[@]}"
    bin="$static_dir/$target/release"
}
