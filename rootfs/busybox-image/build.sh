#!/bin/sh
# Builds the built-in busybox OCI image layout from Debian's busybox-static (/bin/busybox).
# Usage: rootfs/busybox-image/build.sh OUT_DIR [BUSYBOX_BINARY]
# The image store also builds and imports the same image by itself on first use of
# busybox:latest / busybox:1.36, so running this is only needed to get the layout as a file
# (for skopeo, another runtime, or `peapod image import OUT_DIR`).
set -eu
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [BUSYBOX_BINARY]" >&2
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
exec cargo run --quiet --release -p image-store --example build-busybox -- "$@"
