#!/bin/sh
# The demo's pod, run by scripts/demo.sh where KVM works (in the KVM test host: busybox sh):
# `peapod run --rm -f tests/pod-e2e/pods/two-containers.yaml` with its output on the terminal;
# once the debian container has fetched the page, `peapod exec` fetches it again from inside the
# pod; the web server keeps the pod running (as in Kubernetes), so the demo then stops it with
# SIGINT, as Ctrl-C would, and checks that nothing is left. Environment: PEAPOD_E2E_BIN
# (peapod, launch), PEAPOD_VMM, PEAPOD_KERNEL, PEAPOD_INITRD. Exits 0 when all of it worked.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
peapod="$PEAPOD_E2E_BIN/peapod"
launch="$PEAPOD_E2E_BIN/launch"
manifest="$here/pods/two-containers.yaml"
d=/tmp/peapod-demo
rm -rf "$d"
mkdir -p "$d"
export PEAPOD_ROOT="$d/root" PEAPOD_BUSYBOX="${PEAPOD_BUSYBOX:-/bin/busybox}"
secs() { cut -d. -f1 /proc/uptime; }
say() { printf '\n=== %s\n' "$*"; }
bad() { echo "demo: FAILED: $*"; exit 1; }

say "peapod run --rm -f ${manifest#"$PWD"/}   (PEAPOD_ROOT=$PEAPOD_ROOT)"
t0="$(secs)"
{
    ("$launch" "$peapod" run --rm -f "$manifest" 2>&1 &
        echo $! >"$d/pid"
        wait $!
        echo $? >"$d/rc") | tee "$d/out"
} &
while [ ! -s "$d/pid" ]; do sleep 0.1; done
pid="$(cat "$d/pid")"
end=$((t0 + 180))
until grep -q '^\[debian-container\] Hello from the debian container' "$d/out"; do
    [ -e "$d/rc" ] && bad "peapod run ended (exit $(cat "$d/rc")) before the page was fetched"
    [ "$(secs)" -lt "$end" ] || bad "no page after 180 s"
    sleep 0.2
done
echo "(the pod runs; $(($(secs) - t0)) s from 'peapod run' to the page)"

say "peapod exec two-containers -c web-container -- wget -qO- localhost/index.html"
i=0
until "$peapod" exec two-containers -c web-container -- wget -qO- localhost/index.html; do
    i=$((i + 1))
    [ "$i" -lt 5 ] || bad "peapod exec failed"
    sleep 1
done

say "Ctrl-C (SIGINT to peapod's process group): the pod stops within its grace period"
kill -INT -"$pid"
end=$(($(secs) + 60))
while [ ! -e "$d/rc" ]; do
    [ "$(secs)" -lt "$end" ] || bad "peapod run did not stop within 60 s of SIGINT"
    sleep 0.2
done
wait
rc="$(cat "$d/rc")"
echo "peapod run exit status: $rc"
[ "$rc" = 130 ] || bad "exit status $rc, expected 130"
for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2>/dev/null)" = peapod-vmm ] && bad "a peapod-vmm is still running (${p#/proc/})"
done
left="$(find "$PEAPOD_ROOT/pods" -mindepth 2 2>/dev/null | head -n 3)"
[ -z "$left" ] || bad "left behind: $left"
say "done: the pod ran, served its page over localhost, stopped cleanly; nothing left"
rm -rf "$d"
