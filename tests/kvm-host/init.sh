#!/bin/sh
# /init of the emulated KVM test host: loads kvm + 9p modules, mounts the 9p
# shares at the same absolute paths as outside, runs the requested command,
# prints a parseable exit marker and powers off.
export PATH=/bin:/sbin HOME=/root TERM=dumb
mkdir -p /proc /sys /dev /tmp /run /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null

fail() {
    echo "peapod-kvm-host: $*"
    echo "PEAPOD-KVM-HOST-EXIT: 255"
    poweroff -f
    sleep 60
}

while read -r m; do
    insmod "$m" 2>/dev/null
done </etc/modules.order
[ -c /dev/kvm ] || echo "peapod-kvm-host: warning: /dev/kvm missing after loading kvm modules"

run=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    peapod.run=*) run="${arg#peapod.run=}" ;;
    esac
done
[ -n "$run" ] || fail "no peapod.run= on the kernel command line"

opts=trans=virtio,version=9p2000.L,msize=512000,access=any
mkdir -p "$run"
mount -t 9p -o "$opts" peapodrun "$run" || fail "cannot mount the run directory $run"
while read -r tag path; do
    mkdir -p "$path"
    mount -t 9p -o "$opts" "$tag" "$path" || fail "cannot mount share $tag at $path"
done <"$run/shares"

cwd="$(cat "$run/cwd")"
cd "$cwd" || fail "cannot cd to $cwd"
sh "$run/cmd.sh" </dev/console
status=$?
echo "$status" >"$run/status"
sync
echo "PEAPOD-KVM-HOST-EXIT: $status"
poweroff -f
sleep 60
