#!/usr/bin/env bash
# Runs one end-to-end suite and runs it once more only when it failed with a *known failure of
# the emulated KVM test host*: a signature from tests/lib/flake-signatures.sh (a guest kernel
# crash, a triple fault, a vCPU in unmapped kernel memory) in the suite's own output or in a
# guest console or VMM log written during the run (tests/README.md, "Known intermittent
# failures"). Each such retry prints `FLAKY <suite>: <signature>` and appends it to
# $E2E_FLAKY_LOG; any other failure is ours and fails the run at once, with its files. Source
# it, then:
#   E2E_CONSOLE_DIRS=(DIR...)   # where the suites leave guest consoles and VMM logs
#   E2E_FLAKY_LOG=FILE          # where FLAKY lines are collected (the summary counts them)
#   e2e_run NAME CMD...

# shellcheck source=../../tests/lib/flake-signatures.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../tests/lib/flake-signatures.sh"

e2e_run_logs() { # MARKER: logs newer than MARKER that a failed run may explain itself in
    find "${E2E_CONSOLE_DIRS[@]}" -type f \( -name '*console*' -o -name '*.stderr' -o -name 'vmm*.log' \) \
        -newer "$1" 2>/dev/null
}

e2e_run() {
    local name="$1" marker status out sig attempt=1
    local -a files
    shift
    marker="$(mktemp)"
    out="$(mktemp -d)/$name-output"
    while :; do
        status=0
        "$@" 2>&1 | tee "$out" || status=$?
        ((status != 0)) || break
        mapfile -t files < <(e2e_run_logs "$marker")
        sig="$(flake_signature "$out" "${files[@]}")"
        if [[ -z "$sig" || "$attempt" -ge 2 ]]; then
            [[ -n "$sig" ]] || echo "e2e-retry: $name failed, not with a known emulation signature: no retry" >&2
            break
        fi
        echo "FLAKY $name: $sig"
        [[ -z "${E2E_FLAKY_LOG:-}" ]] || echo "FLAKY $name: $sig" >>"$E2E_FLAKY_LOG"
        echo "e2e-retry: running $name once more (a second failure fails the run)" >&2
        attempt=$((attempt + 1))
        touch "$marker"
    done
    rm -f "$marker"
    rm -rf "$(dirname "$out")"
    return "$status"
}
