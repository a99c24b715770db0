# shellcheck shell=bash
# Shared by make-rootfs.sh and make-initramfs.sh (sourced, not run): error exits and the check
# that a binary can run where there is no libc (the guest initramfs, a busybox container root).

# die MSG...: prints "SCRIPT: MSG" on stderr and exits 1.
die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# require_static BIN WHAT FIX: BIN (described as WHAT, e.g. "busybox") must be an executable,
# statically linked file; otherwise dies, telling how to FIX it.
require_static() {
    local bin="$1" what="$2" fix="$3"
    [[ -x "$bin" ]] || die "$what $bin not found ($fix)"
    # ldd prints "name => path" lines only for a dynamically linked executable.
    if ldd "$bin" 2>&1 | grep -q '=>'; then
        die "$what $bin is dynamically linked, and the guest has no libc ($fix)"
    fi
}
