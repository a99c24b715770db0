#!/bin/sh
# The pod end-to-end cases: real `peapod run` of real pods in real microVMs. Run by
# tests/pod-e2e/run.sh where KVM works (inside the KVM test host: busybox sh, so POSIX sh only).
# Environment (run.sh sets it): PEAPOD_E2E_BIN (peapod, launch), PEAPOD_VMM, PEAPOD_KERNEL,
# PEAPOD_INITRD, PEAPOD_E2E_OUT (per-case files; default /tmp/pod-e2e-out), PEAPOD_E2E_ONLY
# (comma-separated case names), PEAPOD_BUSYBOX (default /bin/busybox, static),
# PEAPOD_E2E_REPEAT (run the selection N times: the stress loop).
# Prints ok/FAIL per case (reasons, output, guest console tail and the VMM's state dump on
# failure), then a summary with durations; a failed case runs again only on a known emulation
# signature (PEAPOD_E2E_ATTEMPTS, default 3 attempts in all; `FLAKY <case>: <signature>`), and
# the suite exits 1 when a case failed.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
pods="$here/pods"
# shellcheck source-path=SCRIPTDIR disable=SC2154 # c and cmd_rc are set by lib.sh
. "$here/lib.sh"
# shellcheck source=../lib/flake-signatures.sh
. "$here/../lib/flake-signatures.sh"

die() { echo "pod-e2e: error: $*" >&2; exit 2; }
peapod="${PEAPOD_E2E_BIN:?set PEAPOD_E2E_BIN}/peapod"
launch="$PEAPOD_E2E_BIN/launch"
real_vmm="${PEAPOD_VMM:?set PEAPOD_VMM}"
out="${PEAPOD_E2E_OUT:-/tmp/pod-e2e-out}"
work=/tmp/pod-e2e
export PEAPOD_BUSYBOX="${PEAPOD_BUSYBOX:-/bin/busybox}"
for f in "$peapod" "$launch" "$real_vmm"; do [ -x "$f" ] || die "$f missing"; done
for f in "${PEAPOD_KERNEL:?}" "${PEAPOD_INITRD:?}"; do [ -s "$f" ] || die "$f missing"; done
[ -x "$PEAPOD_BUSYBOX" ] || die "$PEAPOD_BUSYBOX missing (the built-in busybox image needs it)"
[ -c /dev/kvm ] || die "/dev/kvm missing"
[ -z "$(vmm_pids)" ] || die "a peapod-vmm is already running here ($(vmm_pids | tr '\n' ' '))"
rm -rf "$out" "$work"
mkdir -p "$out" "$work"
passed=0 failed=0

# --- the examples (../shared/examples, copied verbatim into pods/) ---------------------------

case_busy_pod_once() { # restartPolicy Never: "ubuntu, on", exit 0; the kept state dir, logs, name in use
    start_pod "$pods/busy-pod-once.yaml" --keep
    expect_rc 0 150
    expect_out "[busy] ubuntu, on"
    expect_err busy Completed
    st="$PEAPOD_ROOT/pods/default/busy-pod-once"
    for f in pod.yaml status.json console.log logs/busy.log; do
        [ -s "$st/$f" ] || fail "state dir lacks $f"
    done
    grep -q Succeeded "$st/status.json" 2>/dev/null || fail "status.json does not say Succeeded: $(head -c 200 "$st/status.json" 2>/dev/null)"
    [ ! -e "$st/vsock.sock" ] || fail "vsock.sock left after the pod ended"
    [ ! -e "$st/volumes" ] || fail "volumes/ left after the pod ended"
    peapod_cmd logs logs busy-pod-once
    { [ "$cmd_rc" = 0 ] && grep -qx 'ubuntu, on' "$c/logs.out"; } ||
        fail "peapod logs busy-pod-once: exit $cmd_rc, output '$(head -c 200 "$c/logs.out")'"
    peapod_cmd again run -f "$pods/busy-pod-once.yaml"
    [ "$cmd_rc" = 2 ] || fail "a second run of the same name exited $cmd_rc, expected 2"
    [ -s "$c/again.err" ] || fail "a second run of the same name printed no message"
    rm -rf "$st"
    rmdir "$PEAPOD_ROOT/pods/default" "$PEAPOD_ROOT/pods" 2>/dev/null
}

case_busy_pod() { # restartPolicy Always: "ubuntu, on", CrashLoopBackOff, SIGINT -> 130
    start_pod "$pods/busy-pod.yaml"
    wait_out "[busy] ubuntu, on" 150 || return
    wait_err CrashLoopBackOff 90 || return
    peapod_cmd logs logs busy-pod
    grep -qF 'ubuntu, on' "$c/logs.out" || fail "peapod logs busy-pod: exit $cmd_rc, output '$(head -c 200 "$c/logs.out")'"
    sig INT
    expect_rc 130 60
}

case_counter() { # the sidecar shows "0: <date>", "1: ...", "2: ..."; peapod logs too; SIGINT -> 130
    start_pod "$pods/counter.yaml"
    wait_out "[count-log] 0: " 150 || return
    wait_out "[count-log] 1: " 30 || return
    wait_out "[count-log] 2: " 30 || return
    peapod_cmd logs logs counter -c count-log
    { grep -q '^0: ' "$c/logs.out" && grep -q '^1: ' "$c/logs.out"; } ||
        fail "peapod logs counter -c count-log: exit $cmd_rc, output '$(head -c 200 "$c/logs.out")'"
    # logs -f follows the running pod (from the last line, --tail 1) and ends when the pod does.
    last="$(grep -o '^[0-9]*' "$c/logs.out" | tail -n 1)"
    timeout 90 "$peapod" logs counter -c count-log -f --tail 1 >"$c/follow.out" 2>"$c/follow.err" &
    follow_pid=$!
    want=$((last + 3))
    wait_in "$c/follow.out" "peapod logs -f" 30 "$want: "
    sig INT
    expect_rc 130 60
    wait "$follow_pid"
    follow_rc=$?
    [ "$follow_rc" = 0 ] || fail "peapod logs -f exited $follow_rc after the pod ended: $(head -c 300 "$c/follow.err")"
    first="$(grep -o '^[0-9]*' "$c/follow.out" | head -n 1)"
    [ "${first:-0}" -ge "$last" ] || fail "peapod logs -f --tail 1 began at line $first, before the last line ($last) when it started"
    # Every line from the first on, in order, none missing.
    grep -o '^[0-9]*' "$c/follow.out" | awk 'NR > 1 && $1 != prev + 1 { bad = 1 } { prev = $1 } END { exit bad }' ||
        fail "peapod logs -f skipped or repeated lines: $(grep -o '^[0-9]*' "$c/follow.out" | tr '\n' ' ')"
}

case_hostpath() { # DirectoryOrCreate: /tmp/peapod-hostpath-demo (0755) gets hello.txt
    d=/tmp/peapod-hostpath-demo
    rm -rf "$d"
    start_pod "$pods/hostpath.yaml"
    expect_rc 0 150
    [ "$(cat "$d/hello.txt" 2>/dev/null)" = "written from the pod" ] ||
        fail "$d/hello.txt: '$(cat "$d/hello.txt" 2>&1)'"
    [ "$(stat -c %a "$d" 2>/dev/null)" = 755 ] || fail "$d has mode $(stat -c %a "$d" 2>&1), expected 755"
    rm -rf "$d"
}

case_init_container() { # the init container completes before tomcat starts; exec wget gets the war
    start_pod "$pods/init-container.yaml"
    wait_err tomcat Running 150 || return
    expect_before "$c/stderr" "war Completed" "tomcat Running"
    exec_until exec "sample web application v2" 30 -- exec javaweb-2 -c tomcat -- wget -qO- localhost:8080/sample.war
    sig INT
    expect_rc 130 60
}

case_two_containers() { # the debian container gets the page from the web container over localhost
    # web-container (httpd -f) never ends, so the pod stays Running after debian-container
    # completed (Kubernetes semantics): check from inside the pod as the example says, then
    # stop it with SIGINT.
    start_pod "$pods/two-containers.yaml"
    wait_out "[debian-container] Hello from the debian container" 150 || return
    wait_err debian-container Completed 30
    exec_until exec "Hello from the debian container" 20 -- exec two-containers -c web-container -- wget -qO- localhost/index.html
    running || fail "the pod ended while web-container still serves"
    sig INT
    expect_rc 130 60
}

case_twocontainers() { # exec in the shell container reaches the service on localhost:9876
    start_pod "$pods/twocontainers.yaml"
    wait_err shell Running 150 || return
    exec_until exec '"version": "0.5.0"' 30 -- exec twocontainers -c shell -- wget -qO- localhost:9876/info
    # -c defaults to the first app container (sise); exit codes pass through.
    peapod_cmd exec-default exec twocontainers -- cat /srv/info
    grep -qF '"host": "localhost:9876"' "$c/exec-default.out" || fail "peapod exec without -c: exit $cmd_rc, output '$(head -c 200 "$c/exec-default.out")'"
    peapod_cmd exec-rc exec twocontainers -c shell -- sh -c 'exit 7'
    [ "$cmd_rc" = 7 ] || fail "peapod exec of 'exit 7' returned $cmd_rc"
    sig INT
    expect_rc 130 60
}

# --- our pods ------------------------------------------------------------------------------

case_emptydir() { # writer and reader share an emptyDir
    start_pod "$pods/e2e-emptydir.yaml"
    expect_rc 0 150
    expect_out "[reader] hello through emptyDir"
    expect_out "[writer] wrote"
}

case_sidecar() { # a sidecar tails a log file the main container appends to
    start_pod "$pods/e2e-sidecar.yaml"
    wait_out "[sidecar] entry 20" 150 || return
    grep '^\[sidecar\] entry ' "$c/stdout" | sed 's/^\[sidecar\] entry //' >"$c/got"
    seq 1 20 >"$c/want"
    cmp -s "$c/got" "$c/want" || fail "the sidecar's lines are not entry 1..20 in order: $(tr '\n' ' ' <"$c/got")"
    wait_out "[app] app wrote 20 entries" 30
    sig INT
    expect_rc 130 60
}

case_init_prep() { # an init container prepares files before the main container starts
    start_pod "$pods/e2e-init-prep.yaml"
    expect_rc 0 150
    expect_out "[prep] prepared"
    expect_out "[main] config: prepared by init"
    expect_before "$c/stdout" "[prep] prepared" "[main] config:"
    expect_before "$c/stderr" "prep Completed" "main Running"
}

case_emptydir_restart() { # an emptyDir survives a container restart (restartPolicy OnFailure)
    start_pod "$pods/e2e-emptydir-restart.yaml"
    expect_rc 0 150
    expect_out "[app] first run: exit 3"
    expect_out "[app] second run saw: written by run 1"
    expect_before "$c/stdout" "[app] first" "[app] second"
}

case_localhost_http() { # busybox httpd and wget over localhost
    start_pod "$pods/e2e-localhost-http.yaml"
    expect_rc 0 150
    expect_out "[client] served over localhost"
    expect_out "[server] server done"
}

case_hostpath_create() { # DirectoryOrCreate makes a nested 0755 directory; the write shows on the host
    rm -rf /tmp/pod-e2e-hostpath
    start_pod "$pods/e2e-hostpath-create.yaml"
    expect_rc 0 150
    f=/tmp/pod-e2e-hostpath/a/b/out.txt
    [ "$(cat "$f" 2>/dev/null)" = "written by e2e-hostpath-create" ] || fail "$f: '$(cat "$f" 2>&1)'"
    [ "$(stat -c %a /tmp/pod-e2e-hostpath/a/b 2>/dev/null)" = 755 ] ||
        fail "/tmp/pod-e2e-hostpath/a/b has mode $(stat -c %a /tmp/pod-e2e-hostpath/a/b 2>&1), expected 755"
    rm -rf /tmp/pod-e2e-hostpath
}

case_oom() { # a 32Mi limit: OOMKilled, exit 137
    start_pod "$pods/e2e-oom.yaml"
    expect_rc 137 150
    expect_out "[hog] allocating"
    expect_no_out "survived"
    expect_err OOMKilled
    score="$(sed -n 's/^\[hog\] score //p' "$c/stdout")"
    case "$score" in
    '' | *[!0-9]*) fail "the hog's oom_score_adj is '$score', expected a Burstable score 3..999" ;;
    *) if [ "$score" -lt 3 ] || [ "$score" -gt 999 ]; then fail "the hog's oom_score_adj is $score, expected 3..999"; fi ;;
    esac
}

case_qos() { # a Guaranteed pod: each container's oom_score_adj is -997 (kubelet policy)
    start_pod "$pods/e2e-qos.yaml"
    expect_rc 0 150
    expect_out "[a] score -997"
    expect_out "[b] score -997"
}

df_used_k() { df -Pk "$1" | awk 'NR == 2 { print $3 }'; }
case_rootfs_1g() { # 1 GiB written to the container's root fails and grows nothing on the host
    df0="$(df_used_k "$PEAPOD_ROOT")"
    start_pod "$pods/e2e-rootfs-1g.yaml"
    max_du=0 max_df="$df0"
    while running; do
        d="$(du -sk "$PEAPOD_ROOT" 2>/dev/null | cut -f1)"
        [ "${d:-0}" -gt "$max_du" ] && max_du="$d"
        d="$(df_used_k "$PEAPOD_ROOT")"
        [ "${d:-0}" -gt "$max_df" ] && max_df="$d"
        sleep 0.5
    done
    expect_rc 0 10
    expect_out "[filler] write refused"
    # The image store keeps the built-in busybox image: that growth is expected.
    img="$(du -sk "$PEAPOD_ROOT/images" 2>/dev/null | cut -f1)"
    img="${img:-0}"
    echo "du max ${max_du} KiB, df growth max $((max_df - df0)) KiB, image store ${img} KiB" >"$c/disk"
    [ $((max_du - img)) -le 8192 ] || fail "\$PEAPOD_ROOT grew to ${max_du} KiB (image store ${img} KiB) during the run"
    [ $((max_df - df0 - img)) -le 16384 ] || fail "the file system of \$PEAPOD_ROOT grew by $((max_df - df0)) KiB (image store ${img} KiB) during the run"
}

case_four() { # 4 containers; every container's 400 lines arrive, in order
    start_pod "$pods/e2e-four.yaml"
    expect_rc 0 150
    seq 1 400 >"$c/want"
    for n in 1 2 3 4; do
        grep "^\[c$n\] " "$c/stdout" | sed "s/^\[c$n\] line //" >"$c/got-c$n"
        cmp -s "$c/got-c$n" "$c/want" ||
            fail "c$n: $(wc -l <"$c/got-c$n") lines, not line 1..400 in order (first difference: $(cmp "$c/got-c$n" "$c/want" 2>&1 | head -n1))"
    done
}

case_memory_emptydir() { # medium Memory is a tmpfs sized by sizeLimit
    start_pod "$pods/e2e-memory-emptydir.yaml"
    expect_rc 0 150
    expect_out "[fill] tmpfs"
    expect_out "[fill] small-ok"
    expect_out "[fill] big-refused"
}

case_subpath() { # subPath on an emptyDir and on a hostPath
    rm -rf /tmp/pod-e2e-subpath
    start_pod "$pods/e2e-subpath.yaml"
    expect_rc 0 150
    expect_out "[prep] prepared"
    expect_out "[main] a"
    expect_out "[main] via emptyDir subPath"
    f=/tmp/pod-e2e-subpath/sub/file.txt
    [ "$(cat "$f" 2>/dev/null)" = "via hostPath subPath" ] || fail "$f: '$(cat "$f" 2>&1)'"
    rm -rf /tmp/pod-e2e-subpath
}

case_readonly() { # readOnly mounts refuse writes
    rm -rf /tmp/pod-e2e-ro
    mkdir -p /tmp/pod-e2e-ro
    echo "from the host" >/tmp/pod-e2e-ro/orig.txt
    start_pod "$pods/e2e-readonly.yaml"
    expect_rc 0 150
    expect_out "[main] data: from init"
    expect_out "[main] emptyDir refused"
    expect_out "[main] hostPath refused"
    expect_out "[main] host: from the host"
    [ ! -e /tmp/pod-e2e-ro/new.txt ] || fail "the read-only hostPath got new.txt on the host"
    rm -rf /tmp/pod-e2e-ro
}

case_sigint_twice() { # a second SIGINT ends the pod at once despite a 60 s grace period
    start_pod "$pods/e2e-sigint-twice.yaml"
    wait_out "[stubborn] ignoring TERM" 150 || return
    t="$(secs)"
    sig INT
    sleep 2
    sig INT
    expect_rc 130 40 || return
    [ $(($(secs) - t)) -le 30 ] || fail "took $(($(secs) - t))s after the first SIGINT"
}

case_sigterm() { # SIGTERM: containers get SIGTERM, SIGKILL after the 5 s grace period; exit 143
    start_pod "$pods/e2e-sigterm.yaml"
    wait_out "[idle] started" 150 || return
    wait_out "[polite] started" 30 || return
    t="$(secs)"
    sig TERM
    expect_rc 143 60 || return
    el=$(($(secs) - t))
    # idle (PID 1 of its namespace, no handler) ignores SIGTERM: the stop takes the grace period.
    [ "$el" -ge 4 ] || fail "ended ${el}s after SIGTERM: the 5 s grace period was not given"
    [ "$el" -le 30 ] || fail "took ${el}s after SIGTERM (grace period 5 s)"
    expect_out "[polite] got TERM"
}

case_vmm_killed() { # the VMM dies (SIGKILL): run exits 1 and cleans up (checked by run_case)
    start_pod "$pods/e2e-sigterm.yaml"
    wait_out "[idle] started" 150 || return
    v="$(vmm_pids)"
    [ -n "$v" ] || { fail "no peapod-vmm process found while the pod runs"; return; }
    # shellcheck disable=SC2086 # one or more pids
    kill -KILL $v
    expect_rc 1 60
    # The VM's death is what the user is told, not the agent connection it took down with it.
    expect_err "the microVM exited unexpectedly"
    ! grep -q "agent: i/o error" "$c/stderr" || fail "the VMM's death was reported as an agent error"
}

case_run_killed() { # SIGKILL of `peapod run` itself: the VMM dies with it, no host mount stays
    rm -rf /tmp/pod-e2e-hostfile
    mkdir -p /tmp/pod-e2e-hostfile
    echo "hello from the host" >/tmp/pod-e2e-hostfile/greeting
    start_pod "$pods/e2e-hostfile.yaml"
    wait_out "[reader] host says: hello from the host" 150 || return
    grep -q 'pod-e2e-hostfile' /proc/self/mountinfo &&
        fail "the hostPath file's bind mount shows in the host's mount namespace"
    kill -KILL "$run_pid"
    end=$(($(secs) + 20))
    while [ -n "$(vmm_pids)" ] && [ "$(secs)" -lt "$end" ]; do sleep 0.2; done
    [ -z "$(vmm_pids)" ] || fail "the VMM outlived its SIGKILLed peapod run by 20 s"
    wait_rc 20
    st="$PEAPOD_ROOT/pods/default/e2e-hostfile"
    [ -d "$st" ] || fail "the killed run's directory is gone (expected until the next run reclaims it)"
    # run_case checks /proc/mounts against the snapshot; a second run reclaims the directory.
    start_pod "$pods/e2e-hostfile.yaml"
    wait_out "[reader] host says: hello from the host" 150 || return
    sig INT
    expect_rc 130 60
    [ "$(cat /tmp/pod-e2e-hostfile/greeting)" = "hello from the host" ] || fail "the host file changed"
    rm -rf /tmp/pod-e2e-hostfile
}

case_vmm_state_dump() { # SIGUSR1 to the VMM prints every thread and vCPU state; the pod goes on
    start_pod "$pods/e2e-sigterm.yaml"
    wait_out "[idle] started" 150 || return
    v="$(vmm_pids)"
    [ -n "$v" ] || { fail "no peapod-vmm process found while the pod runs"; return; }
    # shellcheck disable=SC2086 # one or more pids
    kill -USR1 $v
    end=$(($(secs) + 20))
    until grep -q 'peapod-vmm: state: vcpu0: .* rip=0x' "$c/vmm.log" 2>/dev/null; do
        [ "$(secs)" -lt "$end" ] || { fail "no vcpu0 state line in vmm.log 20 s after SIGUSR1"; break; }
        sleep 0.2
    done
    grep -q 'peapod-vmm: state: thread .* vcpu0 state=' "$c/vmm.log" || fail "vmm.log lists no vcpu0 thread"
    # The vsock counters (the agent's connections were opened by the host) and each transport's
    # queues (the vsock device is type 19, with its rx, tx and event queues ready).
    grep -Eq 'peapod-vmm: state: device vsock-[0-9]+ .*opened_by_host=[1-9]' "$c/vmm.log" ||
        fail "vmm.log has no vsock counters with host-opened connections"
    grep -Eq 'peapod-vmm: state: virtio-mmio [0-9]+ type=19 .*q0:avail=[0-9]+,used=[0-9]+ q1:.* q2:' "$c/vmm.log" ||
        fail "vmm.log has no queue line for the vsock transport"
    ! grep -q 'did not answer' "$c/vmm.log" || fail "a vCPU did not answer: $(grep 'did not answer' "$c/vmm.log")"
    running || fail "the pod ended after SIGUSR1 to the VMM"
    sig INT
    expect_rc 130 60
}

# --- bad input: exit 2 before any VM starts, nothing left -----------------------------------

case_bad_image() {
    spy_vmm
    start_pod "$pods/bad-image.yaml"
    expect_bad_input
    expect_err "localhost:1/nope:1"
}

case_bad_manifest() {
    spy_vmm
    start_pod "$pods/bad-manifest.yaml"
    expect_bad_input
    expect_err "metadata.name"
    expect_err "spec.containers[0].image"
}

case_bad_hostpath() {
    rm -rf /tmp/pod-e2e-does-not-exist
    spy_vmm
    start_pod "$pods/bad-hostpath.yaml"
    expect_bad_input
    expect_err "/tmp/pod-e2e-does-not-exist"
    [ ! -e /tmp/pod-e2e-does-not-exist ] || fail "the missing hostPath was created"
}

all_cases="bad-manifest bad-image bad-hostpath busy-pod-once busy-pod counter hostpath
init-container two-containers twocontainers emptydir emptydir-restart sidecar init-prep localhost-http
hostpath-create oom qos rootfs-1g four memory-emptydir subpath readonly sigint-twice sigterm vmm-killed run-killed vmm-state-dump"
all_cases="$(echo "$all_cases" | tr '\n' ' ')"
if [ -n "${PEAPOD_E2E_ONLY:-}" ]; then
    for n in $(echo "$PEAPOD_E2E_ONLY" | tr , ' '); do
        case " $all_cases " in *" $n "*) ;; *) die "unknown case '$n' (cases: $all_cases)" ;; esac
    done
fi

t_start="$(now)"
: >"$out/summary"
# A failed case runs again (up to PEAPOD_E2E_ATTEMPTS attempts in all, default 3 in the test
# host) only when its files show a known failure of the emulated test host
# (tests/lib/flake-signatures.sh; tests/README.md, "Known intermittent failures"); each such
# retry prints `FLAKY <case>: <signature>`. Any other failure is ours: no retry.
# PEAPOD_E2E_REPEAT=N runs the selected cases N times in turn (the stress loop,
# scripts/stress-pods.sh), one attempt each, and counts the failures by signature.
attempts="${PEAPOD_E2E_ATTEMPTS:-3}"
case "$attempts" in '' | *[!0-9]* | 0) die "PEAPOD_E2E_ATTEMPTS must be a positive number (got '$attempts')" ;; esac
repeat="${PEAPOD_E2E_REPEAT:-1}"
case "$repeat" in '' | *[!0-9]* | 0) die "PEAPOD_E2E_REPEAT must be a positive number (got '$repeat')" ;; esac
[ "$repeat" = 1 ] || attempts=1
flaky_count=0 unclassified=0 round=1
: >"$out/flaky"
# case_signature DIR: the emulation signature of a failed case's files, or nothing.
case_signature() {
    # stderr too: peapod's error carries the console's and the VMM's last lines when the VM
    # died, which a follower of vmm.log may not have copied yet.
    sig_="$(flake_signature "$1/console.log" "$1/vmm.log" "$1/stderr")"
    [ -n "$sig_" ] || sig_="$(flake_boot_stall "$1/console.log" "$1/stderr")"
    echo "$sig_"
}
# note_connection_events NAME ROUND ATTEMPT: in the stress loop, keeps every sign of a broken
# agent connection that a passing case survived (the host reconnected, the VMM reset a
# connection) in $out/connection-events, with the case and round.
note_connection_events() {
    d_="$out/$1"
    [ "$3" = 1 ] || d_="$out/$1.$3"
    [ -d "$d_" ] || d_="$out/$1.round$2"
    grep -hE 'control connection|log stream reconnected|resetting it|reset by the guest in state (Established|PeerInit)' \
        "$d_/stderr" "$d_/vmm.log" 2>/dev/null | sed "s|^|$1 round $2: |" >>"$out/connection-events"
}
: >"$out/connection-events"
while [ "$round" -le "$repeat" ]; do
    [ "$repeat" = 1 ] || echo "=== round $round of $repeat"
    for name in $all_cases; do
        selected "$name" || continue
        # (sh has no local variables: names no case function uses)
        case_attempt=1
        case_ok=0
        while :; do
            run_case "$name" "$case_attempt" && case_ok=1
            [ "$repeat" = 1 ] || note_connection_events "$name" "$round" "$case_attempt"
            [ "$case_ok" = 0 ] || break
            dir_="$out/$name"
            [ "$case_attempt" = 1 ] || dir_="$out/$name.$case_attempt"
            sig="$(case_signature "$dir_")"
            if [ "$repeat" != 1 ]; then
                mv "$dir_" "$out/$name.round$round"
                dir_="$out/$name.round$round"
            fi
            if [ -z "$sig" ]; then
                unclassified=$((unclassified + 1))
                echo "UNCLASSIFIED $name: not a known emulation failure (files: $dir_)"
                echo "UNCLASSIFIED $name (files: $dir_)" >>"$out/flaky"
                break
            fi
            flaky_count=$((flaky_count + 1))
            echo "FLAKY $name: $sig"
            echo "FLAKY $name: $sig (files: $dir_)" >>"$out/flaky"
            case_attempt=$((case_attempt + 1))
            [ "$case_attempt" -le "$attempts" ] || break
        done
        if [ "$case_ok" = 1 ]; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
        fi
    done
    round=$((round + 1))
done
total="$(awk -v a="$t_start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')"
echo
echo "pod-e2e summary ($passed passed, $failed failed, ${total}s; FLAKY $flaky_count, UNCLASSIFIED $unclassified):"
cat "$out/summary"
[ ! -s "$out/flaky" ] || cat "$out/flaky"
if [ "$repeat" != 1 ]; then
    echo "connection events survived ($(wc -l <"$out/connection-events") lines, $out/connection-events):"
    head -n 40 "$out/connection-events"
fi
[ "$failed" = 0 ]
