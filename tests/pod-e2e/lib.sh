# shellcheck shell=sh disable=SC2154,SC2016,SC3043 # vars set by cases.sh; quotes in messages; ash and dash have local
# Helpers of the pod end-to-end cases (sourced by tests/pod-e2e/cases.sh). POSIX sh: it runs in
# the KVM test host's busybox ash (no bash, no pgrep there) as well as on a direct-KVM host.
# A case function uses: start_pod / wait_out / wait_err / wait_rc / sig / peapod_cmd / expect_*
# and records problems with `fail REASON`; run_case does the rest (fresh PEAPOD_ROOT, leftover
# checks, report, timing).

secs() { cut -d. -f1 /proc/uptime; }
now() { cut -d' ' -f1 /proc/uptime; }

# fail REASON...: the current case fails (all reasons are reported).
fail() { printf '%s\n' "$*" >>"$c/reasons"; }

# pids of peapod-vmm processes (by /proc/PID/comm: works without pgrep).
vmm_pids() {
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = peapod-vmm ] && echo "${d#/proc/}"
    done
}

mounts_snapshot() { awk '{ print $1, $2, $3 }' /proc/mounts | LC_ALL=C sort; }

# start_pod MANIFEST [EXTRA ARGS...]: `peapod run --rm -f MANIFEST` in the background, in a
# process group of its own with SIGINT at its default action (as from a terminal). stdout and
# stderr go to $c/stdout and $c/stderr, the exit status to $c/rc; the guest console and the
# VMM's stderr are followed into $c/console.log and $c/vmm.log. `--rm` is left out when the first
# extra argument is --keep.
start_pod() {
    local manifest="$1" rm_flag=--rm pod_name pod_ns
    shift
    if [ "${1:-}" = --keep ]; then
        rm_flag=""
        shift
    fi
    pod_name="$(awk '/^metadata:/ { m = 1; next } m && /^  name:/ { print $2; exit }' "$manifest")"
    pod_ns="$(awk '/^metadata:/ { m = 1; next } m && /^  namespace:/ { print $2; exit }' "$manifest")"
    pod_ns="${pod_ns:-default}"
    rm -f "$c/rc" "$c/pid"
    # shellcheck disable=SC2086 # rm_flag is empty or one word
    ("$launch" "$peapod" run $rm_flag -f "$manifest" "$@" >"$c/stdout" 2>"$c/stderr" &
        echo $! >"$c/pid"
        wait $!
        echo $? >"$c/rc.tmp"
        mv "$c/rc.tmp" "$c/rc") &
    sub_pid=$!
    while [ ! -s "$c/pid" ]; do sleep 0.05; done
    run_pid="$(cat "$c/pid")"
    tail -n +1 -F "$PEAPOD_ROOT/pods/$pod_ns/$pod_name/console.log" >"$c/console.log" 2>/dev/null &
    tail_pids="$tail_pids $!"
    tail -n +1 -F "$PEAPOD_ROOT/pods/$pod_ns/$pod_name/vmm.log" >"$c/vmm.log" 2>/dev/null &
    tail_pids="$tail_pids $!"
}

running() { [ -n "${run_pid:-}" ] && [ ! -e "$c/rc" ]; }

# has FILE S1 [S2]: FILE has a line holding the fixed string S1 (and S2).
has() { grep -F -- "$2" "$1" 2>/dev/null | grep -qF -- "${3:-$2}"; }

# wait_in FILE WHAT TIMEOUT S1 [S2]: until FILE has a line holding S1 (and S2); fails the case
# (and returns 1) on timeout or when the run ended without it.
wait_in() {
    local file="$1" what="$2" t="$3" s1="$4" s2="${5:-$4}" end
    end=$(($(secs) + t))
    while :; do
        has "$file" "$s1" "$s2" && return 0
        if ! running; then
            has "$file" "$s1" "$s2" && return 0
            fail "$what never showed '$s1' ${5:+with '$5' }(peapod exited with $(cat "$c/rc" 2>/dev/null))"
            return 1
        fi
        if [ "$(secs)" -ge "$end" ]; then
            fail "$what did not show '$s1' ${5:+with '$5' }within ${t}s"
            return 1
        fi
        sleep 0.2
    done
}
# wait_out STRING [TIMEOUT=90]: the run's stdout; wait_err WORD1 [WORD2] [TIMEOUT=90]: a
# stderr line holding both words (the contract fixes only key words of the event lines).
wait_out() { wait_in "$c/stdout" stdout "${2:-90}" "$1"; }
wait_err() {
    case "${2:-}" in
    '' | *[!0-9]*) wait_in "$c/stderr" stderr "${3:-90}" "$1" "${2:-$1}" ;;
    *) wait_in "$c/stderr" stderr "$2" "$1" ;;
    esac
}

# wait_rc [TIMEOUT=120]: waits for the run to end; sets rc (empty on timeout, then the case
# fails and the run is killed).
wait_rc() {
    local t="${1:-120}" end
    end=$(($(secs) + t))
    while running; do
        if [ "$(secs)" -ge "$end" ]; then
            fail "peapod run did not exit within ${t}s"
            rc=""
            stop_run
            return 1
        fi
        sleep 0.2
    done
    rc="$(cat "$c/rc")"
    return 0
}

# expect_rc WANT [TIMEOUT]: waits for the run's end and checks its exit status.
expect_rc() {
    wait_rc "${2:-120}" || return 1
    [ "$rc" = "$1" ] || { fail "exit status $rc, expected $1"; return 1; }
}

# sig SIGNAL: sends SIGNAL to the run's process group (what a terminal's Ctrl-C does).
sig() {
    running || { fail "cannot send SIG$1: peapod already exited with $(cat "$c/rc")"; return 1; }
    kill -"$1" -"$run_pid" 2>/dev/null || kill -"$1" "$run_pid"
}

# stop_run: ends a run the case left behind (after a failure): SIGINT, then SIGKILL of the
# group and of any VMM it started.
stop_run() {
    local end
    if running; then
        kill -INT -"$run_pid" 2>/dev/null
        end=$(($(secs) + 45))
        while running && [ "$(secs)" -lt "$end" ]; do sleep 0.2; done
        if running; then
            fail "peapod run survived SIGINT for 45s: killed"
            kill -KILL -"$run_pid" 2>/dev/null
        fi
    fi
    [ -n "${sub_pid:-}" ] && wait "$sub_pid" 2>/dev/null
    sub_pid=""
}

# expect_out / expect_no_out / expect_err FIXED_STRING: checks the run's stdout / stderr.
expect_out() { grep -qF -- "$1" "$c/stdout" || fail "stdout lacks '$1'"; }
expect_no_out() { ! grep -qF -- "$1" "$c/stdout" || fail "stdout has '$1'"; }
expect_err() { has "$c/stderr" "$@" || fail "stderr has no line with '$1'${2:+ and '$2'}"; }

# line_no FILE S1 [S2]: number of the first line holding S1 (and S2); empty if none.
line_no() { grep -nF -- "$2" "$1" | grep -F -- "${3:-$2}" | head -n1 | cut -d: -f1; }

# expect_before FILE "A1 [A2]" "B1 [B2]": the first line with the words A comes before the first
# line with the words B (each one or two space-free words).
expect_before() {
    local a b
    # shellcheck disable=SC2086 # word splitting intended
    a="$(line_no "$1" $2)" b="$(line_no "$1" $3)"
    if [ -z "$a" ] || [ -z "$b" ] || [ "$a" -ge "$b" ]; then
        fail "$(basename "$1"): '$2' (line ${a:-none}) not before '$3' (line ${b:-none})"
    fi
}

# peapod_cmd NAME ARGS...: runs `peapod ARGS` (timeout 60 s) with output in $c/NAME.out/.err;
# sets cmd_rc.
peapod_cmd() {
    local name="$1"
    shift
    timeout 60 "$peapod" "$@" >"$c/$name.out" 2>"$c/$name.err"
    cmd_rc=$?
    echo "\$ peapod $* -> $cmd_rc" >>"$c/commands"
}

# exec_until NAME WANT TRIES -- ARGS...: retries `peapod ARGS` (an exec) once a second until
# its stdout holds WANT.
exec_until() {
    local name="$1" want="$2" tries="$3" i=0
    shift 4
    while [ "$i" -lt "$tries" ]; do
        peapod_cmd "$name" "$@"
        grep -qF -- "$want" "$c/$name.out" && return 0
        running || break
        i=$((i + 1))
        sleep 1
    done
    fail "peapod $* never printed '$want' (last exit $cmd_rc, stderr: $(tail -c 300 "$c/$name.err" | tr '\n' ' '))"
    return 1
}

# spy_vmm: PEAPOD_VMM becomes a wrapper that records each start in $c/vmm-starts, then execs
# the real VMM (bad-input cases check that it never ran).
spy_vmm() {
    cat >"$c/vmm-spy" <<EOF
#!/bin/sh
echo "\$\$ \$*" >>'$c/vmm-starts'
exec '$real_vmm' "\$@"
EOF
    chmod 755 "$c/vmm-spy"
    export PEAPOD_VMM="$c/vmm-spy"
}

# expect_bad_input: the run exits 2 with a `peapod:` message before any VM started.
expect_bad_input() {
    expect_rc 2 60
    [ -s "$c/stderr" ] || fail "no message on stderr"
    [ ! -e "$c/vmm-starts" ] || fail "the VMM was started: $(cat "$c/vmm-starts")"
}

# selected NAME: whether PEAPOD_E2E_ONLY (comma-separated) includes the case.
selected() {
    [ -z "${PEAPOD_E2E_ONLY:-}" ] && return 0
    case ",$PEAPOD_E2E_ONLY," in *",$1,"*) return 0 ;; esac
    return 1
}

# run_case NAME [ATTEMPT]: runs case_NAME (underscores for dashes) with a fresh PEAPOD_ROOT, then
# checks leftovers: no run or VMM process, nothing under $PEAPOD_ROOT/pods (every case uses --rm
# or cleans up itself; an empty namespace dir may stay), /proc/mounts as before. When the case
# failed with its pod still running, the VMM is asked for its state dump (SIGUSR1) first.
# Returns 1 when the case failed; files go to $out/NAME (attempt 2: $out/NAME.2).
run_case() {
    local name="$1" attempt="${2:-1}" t0 t1 left stale dur p label
    c="$out/$name"
    label="$name"
    if [ "$attempt" != 1 ]; then
        c="$out/$name.$attempt"
        label="$name (attempt $attempt)"
    fi
    rm -rf "$c"
    mkdir -p "$c"
    export PEAPOD_ROOT="$work/$name/root"
    rm -rf "${PEAPOD_ROOT%/root}"
    mkdir -p "$PEAPOD_ROOT"
    export PEAPOD_VMM="$real_vmm"
    run_pid="" sub_pid="" tail_pids="" rc=""
    mounts_snapshot >"$c/mounts.before"
    t0="$(now)"
    echo "--- $label" >&2
    "case_$(echo "$name" | tr - _)"
    if [ -s "$c/reasons" ] && running; then
        for p in $(vmm_pids); do kill -USR1 "$p" 2>/dev/null; done
        sleep 2
    fi
    stop_run
    # busybox `tail -F` polls once a second: let it copy the last lines of the console and of
    # vmm.log (a crash report is often the very last line) before it goes.
    [ -z "$tail_pids" ] || sleep 1.2
    for p in $tail_pids; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    # The contract: stdout holds container log lines only, each "[CONTAINER] LINE".
    if [ -s "$c/stdout" ] && grep -qEv '^\[[^]]+\]( |$)' "$c/stdout"; then
        fail "stdout has lines that are not '[container] line': $(grep -Ev '^\[[^]]+\]( |$)' "$c/stdout" | head -n 3 | tr '\n' '|')"
    fi
    # Leftovers, a little after the end so an exiting VMM is not counted.
    sleep 0.5
    left="$(vmm_pids | tr '\n' ' ')"
    if [ -n "$left" ]; then
        fail "peapod-vmm still running after the case (pids $left): killed"
        for p in $left; do kill -KILL "$p" 2>/dev/null; done
    fi
    if [ -d "$PEAPOD_ROOT/pods" ]; then
        # A pod's state dir (pods/NS/NAME) must be gone; an empty namespace dir may stay.
        stale="$(find "$PEAPOD_ROOT/pods" -mindepth 2 | head -n 5 | tr '\n' ' ')"
        [ -z "$stale" ] || fail "left under \$PEAPOD_ROOT/pods: $stale"
    fi
    mounts_snapshot >"$c/mounts.after"
    if ! cmp -s "$c/mounts.before" "$c/mounts.after"; then
        fail "mounts changed: $(diff "$c/mounts.before" "$c/mounts.after" | grep '^[-+][^-+]' | head -n 5 | tr '\n' ' ')"
    fi
    t1="$(now)"
    dur="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    if [ -s "$c/reasons" ]; then
        echo "FAIL $label (${dur}s)"
        sed 's/^/     reason: /' "$c/reasons"
        if [ -s "$c/stdout" ]; then
            echo "     stdout (last 10 lines):"
            tail -n 10 "$c/stdout" | sed 's/^/       | /'
        fi
        if [ -s "$c/stderr" ]; then
            echo "     stderr (last 15 lines):"
            tail -n 15 "$c/stderr" | sed 's/^/       | /'
        fi
        if [ -s "$c/console.log" ]; then
            echo "     guest console (last 25 lines):"
            tail -n 25 "$c/console.log" | sed 's/^/       | /'
        fi
        if grep -q 'peapod-vmm: state:' "$c/vmm.log" 2>/dev/null; then
            echo "     VMM state dump (SIGUSR1):"
            grep 'peapod-vmm: state:' "$c/vmm.log" | sed 's/^/       | /'
        fi
        echo "     files: $c"
        printf '%-30s FAIL %7ss\n' "$label" "$dur" >>"$out/summary"
        rm -rf "${PEAPOD_ROOT%/root}"
        return 1
    fi
    echo "ok   $label (${dur}s)"
    printf '%-30s ok   %7ss\n' "$label" "$dur" >>"$out/summary"
    rm -rf "${PEAPOD_ROOT%/root}"
}
