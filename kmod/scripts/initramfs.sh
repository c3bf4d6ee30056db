#!/usr/bin/env bash
# Builds the gzip cpio initramfs of the Strata qemu test: busybox-static,
# the module, /init (scripts/guest-init.sh) and the test fragment.
#
#   bash kmod/scripts/initramfs.sh --module strata.ko --test tests/smoke.sh -o out/initramfs.cpio.gz \
#       [--add SRC:DEST]...
#
# --test FILE   shell fragment run by /init as /test.sh (see guest-init.sh
#               for its helpers: step, expect_dmesg, reject_dmesg, show)
# --add S:D     copy the host file S to /D in the image (more modules, data)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
module= test= out= adds=()
while (($#)); do
    case $1 in
    --module) module=$2; shift 2 ;;
    --test) test=$2; shift 2 ;;
    -o | --out) out=$2; shift 2 ;;
    --add) adds+=("$2"); shift 2 ;;
    *) echo "usage: $0 --module KO --test FRAGMENT -o OUT [--add SRC:DEST]..." >&2; exit 2 ;;
    esac
done
[[ -n $module && -n $test && -n $out ]] || { echo "initramfs.sh: --module, --test and -o are required" >&2; exit 2; }
[[ -f $module ]] || { echo "initramfs.sh: no module $module" >&2; exit 1; }
[[ -f $test ]] || { echo "initramfs.sh: no test fragment $test" >&2; exit 1; }
busybox=/bin/busybox
[[ $(file -L "$busybox" 2>/dev/null) == *"statically linked"* ]] ||
    { echo "initramfs.sh: $busybox is not static (install busybox-static)" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,lib/modules}
cp "$busybox" "$stage/bin/busybox"
install -m 0755 "$here/guest-init.sh" "$stage/init"
install -m 0644 "$test" "$stage/test.sh"
basename "$test" >"$stage/test.name"
install -m 0644 "$module" "$stage/lib/modules/strata.ko"
for a in "${adds[@]}"; do
    mkdir -p "$stage/$(dirname "${a#*:}")"
    cp "${a%%:*}" "$stage/${a#*:}"
done
# The kernel opens /dev/console for /init before devtmpfs is mounted; the
# node needs root (without it /init reopens it from devtmpfs).
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true

mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner 0:0 --quiet) |
    gzip -9n >"$out.tmp"
mv "$out.tmp" "$out"
echo "initramfs.sh: wrote $out ($(du -h "$out" | cut -f1))" >&2
