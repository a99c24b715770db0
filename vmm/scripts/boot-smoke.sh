#!/usr/bin/env bash
# Boots the peapod guest kernel with a busybox initramfs under peapod-vmm, inside the emulated
# KVM test host (or directly with --direct on a host whose /dev/kvm is hardware-backed), and
# checks each way a VM ends:
#   poweroff  guest `poweroff -f` (a halt without ACPI)  -> status 0, console shows /init ran
#   reboot    guest `reboot -f` (i8042 reset, reboot=k)   -> status 0
#   sigterm   host SIGTERM while the guest idles          -> status 143
#   vsock     --vsock-uds: the guest sees a virtio device of type 19 (vsock), then reboots
#   smp2      --vcpus 2: the guest brings up both CPUs (MP table), then powers off
#   input     --console-input: a line written to the VMM's stdin is read by the guest
#   bigmem    --memory-mib 4096: RAM is split around the MMIO gap (e820 above 4 GiB)
#   fs        --fs twice (read-write and :ro) on one host directory: the guest mounts both with
#             virtiofs, reads a host file, writes one back, and fails to write the ro share
# SMOKE_ONLY="fs poweroff" runs only the named cases.
# Needs: busybox-static, cpio, gzip; the static peapod-vmm build and the kernel (see
# docs/vmm.md). Prints one line per case and exits non-zero if any case fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
direct=0
[[ "${1:-}" == "--direct" ]] && direct=1
vmm="$repo/target/static/x86_64-unknown-linux-gnu/release/peapod-vmm"
[[ -x "$vmm" ]] || { echo "boot-smoke: build $vmm first (docs/vmm.md)" >&2; exit 1; }
kernel="$("$repo/kernel-config/build.sh" | tail -n1)"
work="${PEAPOD_CACHE:-/var/cache/peapod}/vmm-smoke"
rm -rf "$work"; mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/dev" \
    "$work/root/mnt/rw" "$work/root/mnt/ro"
cp /bin/busybox "$work/root/bin/busybox"
cat >"$work/root/init" <<'EOF'
#!/bin/busybox sh
# peapod_exit comes from the kernel command line (unknown key=value words become init's env).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
echo "SMOKE-INIT-REACHED uptime=$(/bin/busybox cut -d' ' -f1 /proc/uptime)"
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] && echo "SMOKE-VIRTIO $(/bin/busybox cat $d/device)"
done
case "$peapod_exit" in
    reboot) /bin/busybox reboot -f ;;
    input)
        echo "SMOKE-WAITING-INPUT"
        read -t 600 line
        echo "SMOKE-INPUT <$line>"
        /bin/busybox reboot -f ;;
    idle) while :; do /bin/busybox sleep 1000; done ;;
    fs)
        t0=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
        /bin/busybox mount -t virtiofs smokefs /mnt/rw && echo "SMOKE-FS-MOUNTED"
        echo "SMOKE-FS-READ <$(/bin/busybox cat /mnt/rw/hello.txt)>"
        t1=$(/bin/busybox cut -d' ' -f1 /proc/uptime)
        echo "SMOKE-FS-TIME mount_start=$t0 first_read_done=$t1"
        echo "written by the guest" >/mnt/rw/from-guest && echo "SMOKE-FS-WROTE"
        /bin/busybox mount -t virtiofs smokero /mnt/ro && echo "SMOKE-FS-RO-MOUNTED"
        echo "SMOKE-FS-RO-READ <$(/bin/busybox cat /mnt/ro/hello.txt)>"
        if echo x >/mnt/ro/nope 2>/dev/null; then echo "SMOKE-FS-RO-WRITE-ALLOWED"; else echo "SMOKE-FS-RO-WRITE-REFUSED"; fi
        /bin/busybox ls /mnt/rw/.. >/dev/null
        /bin/busybox umount /mnt/rw; /bin/busybox umount /mnt/ro
        /bin/busybox poweroff -f ;;
    *) /bin/busybox poweroff -f ;;
esac
EOF
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc --quiet -R 0:0 | gzip -1 >"$work/initrd.cpio.gz")

cat >"$work/cases.sh" <<EOF
#!/bin/sh
# Runs inside the KVM test host (or directly). One line per case: NAME STATUS.
W=$work
SMOKE_ONLY="${SMOKE_ONLY:-}"
base="console=ttyS0 reboot=k panic=1 pci=off nomodules 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd"
run() { name=\$1; shift
    if [ -n "\$SMOKE_ONLY" ]; then case " \$SMOKE_ONLY " in *" \$name "*) ;; *) return 0 ;; esac; fi
    PEAPOD_VMM_TIMING=1 timeout 600 $vmm --kernel $kernel --initrd \$W/initrd.cpio.gz \\
        --console \$W/\$name.console "\$@" 2>\$W/\$name.stderr
    echo "\$name \$?" >>\$W/results
}
: >\$W/results
run poweroff --cmdline "\$base peapod_exit=poweroff"
run reboot --cmdline "\$base peapod_exit=reboot"
# The vsock socket lives in /tmp: Unix sockets cannot be bound on the 9p share.
run vsock --cmdline "\$base peapod_exit=reboot" --vsock-uds /tmp/peapod-smoke-vsock.sock
run smp2 --cmdline "\$base peapod_exit=poweroff" --vcpus 2 --memory-mib 256
run bigmem --cmdline "\$base peapod_exit=poweroff" --memory-mib 4096
# fs: the share lives in the test host's /tmp (not on the 9p share carrying \$W).
S=/tmp/peapod-smoke-fs; rm -rf \$S; mkdir -p \$S; echo "hello over virtio-fs" >\$S/hello.txt
run fs --cmdline "\$base peapod_exit=fs" --fs smokefs=\$S --fs smokero=\$S:ro
echo "HOST-SAW <\$(cat \$S/from-guest 2>/dev/null)> ro-file-exists=\$([ -e \$S/nope ] && echo yes || echo no)" >>\$W/fs.console
if [ -z "\$SMOKE_ONLY" ] || [ "\${SMOKE_ONLY#*input}" != "\$SMOKE_ONLY" ]; then
# input: the VMM's stdin reaches the guest's console once the guest waits for it.
( i=0; while [ \$i -lt 600 ] && ! grep -q SMOKE-WAITING-INPUT \$W/input.console 2>/dev/null; do sleep 1; i=\$((i+1)); done
  echo hello-peapod ) | run input --cmdline "\$base peapod_exit=input" --console-input
fi
if [ -z "\$SMOKE_ONLY" ] || [ "\${SMOKE_ONLY#*sigterm}" != "\$SMOKE_ONLY" ]; then
# sigterm: wait for /init, then SIGTERM the VMM.
PEAPOD_VMM_TIMING=1 $vmm --kernel $kernel --initrd \$W/initrd.cpio.gz --console \$W/sigterm.console \\
    --cmdline "\$base peapod_exit=idle" 2>\$W/sigterm.stderr &
pid=\$!
i=0; while [ \$i -lt 600 ] && ! grep -q SMOKE-INIT-REACHED \$W/sigterm.console 2>/dev/null; do sleep 1; i=\$((i+1)); done
kill -TERM \$pid; wait \$pid; echo "sigterm \$?" >>\$W/results
fi
EOF
chmod +x "$work/cases.sh"
if ((direct)); then "$work/cases.sh"; else "$repo/tests/kvm-host/run.sh" --timeout 1800 -- "$work/cases.sh"; fi

fail=0
check() { # name expected-status console-pattern
    if [[ -n "${SMOKE_ONLY:-}" && " $SMOKE_ONLY " != *" $1 "* ]]; then return 0; fi
    local got; got="$(awk -v n="$1" '$1 == n {print $2}' "$work/results")"
    if [[ "$got" == "$2" ]] && grep -q "$3" "$work/$1.console"; then
        echo "boot-smoke: ok   $1 (status $got) $(grep -o 'setup_us=[0-9]*' "$work/$1.stderr" || true)"
    else
        echo "boot-smoke: FAIL $1: status '${got:-none}', wanted $2 and '$3' on the console ($work/$1.*)"
        fail=1
    fi
}
check poweroff 0 SMOKE-INIT-REACHED
check reboot 0 SMOKE-INIT-REACHED
check vsock 0 "SMOKE-VIRTIO 0x0013"
check smp2 0 "Brought up 1 node, 2 CPUs"
check input 0 "SMOKE-INPUT <hello-peapod>"
check bigmem 0 "BIOS-e820: \[mem 0x0000000100000000-0x000000012fffffff\] usable"
check sigterm 143 SMOKE-INIT-REACHED
check fs 0 "SMOKE-FS-READ <hello over virtio-fs>"
check fs 0 "SMOKE-FS-RO-READ <hello over virtio-fs>"
check fs 0 "SMOKE-FS-RO-WRITE-REFUSED"
check fs 0 "HOST-SAW <written by the guest> ro-file-exists=no"
if [[ -z "${SMOKE_ONLY:-}" || " $SMOKE_ONLY " == *" fs "* ]]; then
    grep -h "SMOKE-FS-TIME" "$work/fs.console" || true
fi
exit $fail
