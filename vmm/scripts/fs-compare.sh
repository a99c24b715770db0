#!/usr/bin/env bash
# virtio-fs backend comparison (issue 6, docs/virtio-fs.md): the in-process fuse-backend-rs
# device (`peapod-vmm --fs`) against vhost-user-fs with virtiofsd (`--vhost-user-fs`).
#
# Inside the emulated KVM test host (or directly with --direct where /dev/kvm is hardware
# backed), for each backend, N boots (FS_COMPARE_RUNS, default 5) of a busybox guest whose /init
# mounts the share, reads a file and prints a marker. Per boot it records:
#   spawn_ms   VMM spawn -> marker seen on the console (wall time, 10 ms /proc/uptime clock,
#              marker polled every 10 ms)
#   guest_ms   in the guest: `mount -t virtiofs` start -> first file read done
#   vfsd_ms    (vhost only) virtiofsd spawn -> its socket exists (not part of spawn_ms)
#   vmm_kib    VMM RSS outside guest memory: RssAnon + RssFile of /proc/PID/status, sampled right
#              after the marker (guest memory is the memfd: RssShmem, reported as shmem_kib)
#   vfsd_kib   (vhost only) RssAnon + RssFile of virtiofsd and its children (the namespace
#              sandbox forks); its RssShmem is guest memory it has touched, not extra memory
#   pod_kib    vmm_kib + vfsd_kib: host memory per pod besides guest memory
# and prints p50, min and max of each. virtiofsd is installed once from crates.io into
# /var/cache/peapod/virtiofsd (libseccomp-dev, libcap-ng-dev needed to build it); its shared
# libraries are bundled next to it so it runs in the busybox test host.
#
# Needs root, busybox-static, cpio, gzip, network for the first install. Benchmark only: not
# part of CI. Env: FS_COMPARE_RUNS (5), VIRTIOFSD_SANDBOX (namespace|chroot|none, default
# chroot: the namespace sandbox needs pivot_root, which fails with EINVAL in the test host,
# whose root is an initramfs), PEAPOD_CACHE (/var/cache/peapod).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "fs-compare: $*" >&2; }
# shellcheck source=../../tests/lib/build-static.sh
source "$here/../../tests/lib/build-static.sh"
direct=0
[[ "${1:-}" == "--direct" ]] && direct=1
runs="${FS_COMPARE_RUNS:-5}"
sandbox="${VIRTIOFSD_SANDBOX:-chroot}"
cache="${PEAPOD_CACHE:-/var/cache/peapod}"
vfsd_root="$cache/virtiofsd"
virtiofsd_version=1.14.0

# Installs virtiofsd (cached: skipped when the wanted version is there) and bundles the
# dynamic loader and libraries it links against into $vfsd_root/lib.
install_virtiofsd() {
    local bin="$vfsd_root/bin/virtiofsd"
    if [[ -x "$bin" ]] && "$bin" --version 2>/dev/null | grep -q "$virtiofsd_version" \
        && [[ -e "$vfsd_root/lib/ld-linux-x86-64.so.2" ]]; then
        return 0
    fi
    local missing=() p
    for p in libseccomp-dev libcap-ng-dev; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
    log "installing virtiofsd $virtiofsd_version from crates.io into $vfsd_root"
    nice -n 10 cargo install --locked virtiofsd --version "$virtiofsd_version" --root "$vfsd_root" >&2
    rm -rf "${vfsd_root:?}/lib"; mkdir -p "$vfsd_root/lib"
    local lib
    for lib in $(ldd "$bin" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }'); do
        cp -L "$lib" "$vfsd_root/lib/"
    done
    [[ -e "$vfsd_root/lib/ld-linux-x86-64.so.2" ]] || { log "error: no dynamic loader bundled"; exit 1; }
}

install_virtiofsd
build_guest_kernel
build_static vmm
vmm="$bin/peapod-vmm"

work="$cache/fs-compare"
rm -rf "$work"; mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/mnt"
cp /bin/busybox "$work/root/bin/busybox"
cat >"$work/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
t0=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
/bin/busybox mount -t virtiofs cmp /mnt || echo "FSCMP-MOUNT-FAILED"
data="$(/bin/busybox cat /mnt/hello.txt)"
t1=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
echo "FSCMP-READ <$data> mount_start=$t0 read_done=$t1"
# Stay up while the host samples memory, then power off.
/bin/busybox sleep 3
/bin/busybox umount /mnt
/bin/busybox poweroff -f
EOF
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1 >"$work/initrd.cpio.gz")

cat >"$work/cases.sh" <<EOF
#!/bin/sh
# Runs inside the KVM test host (or directly). Appends one line per boot to \$W/results.
W=$work
VMM=$vmm
KERNEL=$vmlinux
VFSD="$vfsd_root/lib/ld-linux-x86-64.so.2 --library-path $vfsd_root/lib $vfsd_root/bin/virtiofsd"
SANDBOX=$sandbox
RUNS=$runs
EOF
cat >>"$work/cases.sh" <<'EOF'
base="console=ttyS0 reboot=k panic=1 pci=off nomodules 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd"
S=/tmp/fscmp-share; SOCK=/tmp/fscmp-vfsd.sock
rm -rf $S; mkdir -p $S; echo "hello from the host" >$S/hello.txt
: >$W/results
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# RssAnon + RssFile and RssShmem (KiB) of a pid.
own_kib() { awk '/^RssAnon|^RssFile/ { s += $2 } END { print s + 0 }' /proc/$1/status 2>/dev/null || echo 0; }
shm_kib() { awk '/^RssShmem/ { print $2 }' /proc/$1/status 2>/dev/null || echo 0; }
# A pid and its direct children.
tree() { echo $1; for s in /proc/[0-9]*/stat; do
    awk -v p=$1 '$4 == p { print $1 }' $s 2>/dev/null; done; }
wait_marker() { # console file, vmm pid -> 0 when the marker is seen within 600 s
    i=0; while [ $i -lt 60000 ]; do
        grep -q FSCMP-READ $1 2>/dev/null && return 0
        kill -0 $2 2>/dev/null || return 1
        usleep 10000; i=$((i+1)); done; return 1; }
for backend in inproc vhost; do
  n=1
  while [ $n -le $RUNS ]; do
    con=$W/$backend-$n.console; err=$W/$backend-$n.stderr
    vfsd_ms=0; vpid=""
    if [ $backend = vhost ]; then
        rm -f $SOCK
        v0=$(now_ms)
        $VFSD --shared-dir $S --socket-path $SOCK --sandbox $SANDBOX --cache auto \
            2>$W/$backend-$n.virtiofsd.log &
        vpid=$!
        i=0; while [ ! -S $SOCK ] && [ $i -lt 3000 ] && kill -0 $vpid 2>/dev/null; do
            usleep 10000; i=$((i+1)); done
        vfsd_ms=$(( $(now_ms) - v0 ))
        dev="--vhost-user-fs cmp=$SOCK"
    else
        dev="--fs cmp=$S"
    fi
    t0=$(now_ms)
    $VMM --kernel $KERNEL --initrd $W/initrd.cpio.gz --console $con \
        --cmdline "$base" $dev 2>$err &
    pid=$!
    if wait_marker $con $pid; then
        spawn_ms=$(( $(now_ms) - t0 ))
        vmm_kib=$(own_kib $pid); shmem_kib=$(shm_kib $pid)
        vfsd_kib=0; vfsd_shm=0
        if [ -n "$vpid" ]; then
            for p in $(tree $vpid); do
                vfsd_kib=$(( vfsd_kib + $(own_kib $p) )); vfsd_shm=$(( vfsd_shm + $(shm_kib $p) ))
            done
        fi
        guest_ms=$(sed -n 's/.*mount_start=\([0-9.]*\) read_done=\([0-9.]*\).*/\1 \2/p' $con |
            awk '{ printf "%d\n", ($2 - $1) * 1000 }')
        ok=$(grep -q "FSCMP-READ <hello from the host>" $con && echo ok || echo badread)
    else
        spawn_ms=-1; vmm_kib=0; shmem_kib=0; vfsd_kib=0; vfsd_shm=0; guest_ms=-1; ok=timeout
        kill $pid 2>/dev/null
    fi
    wait $pid; status=$?
    if [ -n "$vpid" ]; then
        # virtiofsd exits when its front-end disconnects; do not wait forever if it does not.
        i=0; while kill -0 $vpid 2>/dev/null && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
        kill $vpid 2>/dev/null; wait $vpid 2>/dev/null
    fi
    echo "$backend $n $ok status=$status spawn_ms=$spawn_ms guest_ms=$guest_ms vfsd_ms=$vfsd_ms vmm_kib=$vmm_kib shmem_kib=$shmem_kib vfsd_kib=$vfsd_kib vfsd_shmem_kib=$vfsd_shm pod_kib=$((vmm_kib + vfsd_kib))" >>$W/results
    n=$((n+1))
  done
done
EOF
chmod +x "$work/cases.sh"
if ((direct)); then "$work/cases.sh"; else tests/kvm-host/run.sh --timeout 3000 -- "$work/cases.sh"; fi

cat "$work/results"
fail=0
grep -v " ok status=0 " "$work/results" >&2 && { log "some boots failed (see $work)"; fail=1; }
# p50 (lower median), min, max of field KEY for BACKEND over the successful boots.
stat() {
    grep "^$1 .* ok status=0 " "$work/results" | tr ' ' '\n' | sed -n "s/^$2=//p" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
            printf "%s (%s-%s)\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
printf '\n%-34s %-22s %-22s\n' "p50 (min-max), $runs boots each" "in-process (--fs)" "vhost-user + virtiofsd"
for k in spawn_ms guest_ms vfsd_ms vmm_kib shmem_kib vfsd_kib vfsd_shmem_kib pod_kib; do
    printf '%-34s %-22s %-22s\n' "$k" "$(stat inproc $k)" "$(stat vhost $k)"
done
echo "virtiofsd sandbox: $sandbox"
exit $fail
