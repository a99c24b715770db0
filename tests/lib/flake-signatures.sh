# shellcheck shell=sh
# The known failures of the *emulated* KVM test host (QEMU TCG emulating AMD SVM), as
# signatures in the files a failed run leaves (tests/README.md, "Known intermittent failures").
# A test retries a case or a suite only when one of these matches, and prints
# `FLAKY <case>: <signature>` for it; every other failure is ours and fails at once. POSIX sh:
# sourced by tests/pod-e2e/lib.sh inside the test host (busybox ash) and by
# scripts/lib/e2e-retry.sh (bash) outside it.

# flake_signature FILE...: prints the first known emulation signature found in FILEs (guest
# console logs, the VMM's stderr), or nothing. A guest kernel panic because init died is the
# agent's own death, so it is never classified.
flake_signature() {
    for f in "$@"; do
        [ -f "$f" ] || continue
        if grep -q 'PANIC: double fault' "$f"; then
            echo "guest kernel double fault ($(basename "$f"))"
            return 0
        fi
        if grep -Eq 'BUG: unable to handle|general protection fault|Oops: [0-9]' "$f"; then
            echo "guest kernel oops ($(basename "$f"): $(grep -Em1 'BUG: unable to handle|general protection fault|Oops: [0-9]' "$f" | cut -c1-80))"
            return 0
        fi
        if grep -q 'Kernel panic - not syncing' "$f" && ! grep -q 'Attempted to kill init' "$f"; then
            echo "guest kernel panic ($(basename "$f"): $(grep -m1 'Kernel panic - not syncing' "$f" | cut -c1-80))"
            return 0
        fi
        if grep -q 'KVM_EXIT_SHUTDOWN' "$f"; then
            echo "guest triple fault (KVM_EXIT_SHUTDOWN in $(basename "$f"))"
            return 0
        fi
        # No modules in our guest kernel: nothing is mapped at 0xffffffffa0000000 and up, so a
        # vCPU running there was sent to a wrong address by the emulated SVM.
        if grep -Eq 'rip=0xffffffff[a-f][0-9a-f]{7}' "$f"; then
            echo "guest running in unmapped kernel memory ($(grep -Eom1 'rip=0xffffffff[a-f][0-9a-f]{7}' "$f"))"
            return 0
        fi
    done
    return 0
}

# flake_boot_stall CONSOLE ERRORS: prints a signature when the host gave up waiting for the
# agent (ERRORS holds `did not answer within`) and the guest console never showed the agent
# listening: the guest stopped in early boot (seen under emulation right after the virtio-mmio
# devices registered). An agent that started and then went silent is not this.
flake_boot_stall() {
    [ -f "$2" ] && grep -q 'did not answer within' "$2" || return 0
    grep -q 'peapod-agent: listening' "$1" 2>/dev/null && return 0
    echo "guest stalled in early boot (console: $(tail -n1 "$1" 2>/dev/null | cut -c1-80))"
}
