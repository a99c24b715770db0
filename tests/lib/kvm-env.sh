#!/usr/bin/env bash
# Decides where KVM tests run and runs them there. Source this file, then:
#   kvm_env_mode                      -> prints "direct" or "kvm-host"
#   kvm_env_run [--share DIR]... [--timeout SECS] -- CMD...
# "direct": /dev/kvm is hardware-backed (no /sys/module/kvm_pvm): CMD runs here,
# in the repository. "kvm-host": CMD runs inside the emulated KVM test host
# (tests/kvm-host/run.sh). PEAPOD_KVM_MODE=direct|kvm-host forces either.

kvm_env_repo() {
    (cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
}

kvm_env_mode() {
    case "${PEAPOD_KVM_MODE:-auto}" in
    direct | kvm-host) echo "$PEAPOD_KVM_MODE"; return 0 ;;
    auto) ;;
    *) echo "kvm-env: PEAPOD_KVM_MODE must be direct, kvm-host or auto (got '$PEAPOD_KVM_MODE')" >&2; return 2 ;;
    esac
    if [[ -d /sys/module/kvm_pvm ]]; then
        # PVM: a software hypervisor that cannot boot a standard guest kernel.
        echo kvm-host
    elif [[ -c /dev/kvm && -r /dev/kvm && -w /dev/kvm ]]; then
        echo direct
    else
        echo kvm-host
    fi
}

kvm_env_run() {
    local mode timeout_s="" args=()
    mode="$(kvm_env_mode)" || return 125
    while (($#)); do
        case "$1" in
        --share) args+=("$1" "$2"); shift 2 ;;
        --timeout) timeout_s="$2"; args+=("$1" "$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "kvm-env: unknown option $1" >&2; return 125 ;;
        esac
    done
    echo "kvm-env: running in mode '$mode': $*" >&2
    if [[ "$mode" == direct ]]; then
        if [[ -n "$timeout_s" ]]; then
            (cd "$(kvm_env_repo)" && timeout -k 10 "$timeout_s" "$@")
        else
            (cd "$(kvm_env_repo)" && "$@")
        fi
    else
        "$(kvm_env_repo)/tests/kvm-host/run.sh" "${args[@]}" -- "$@"
    fi
}
