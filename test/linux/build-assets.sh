#!/usr/bin/env bash
# Builds the assets of the Linux guest tests from Debian's packages: the stock kernel
# (linux-image-amd64's bzImage and the modules its virtio devices and ext4 need) and a static
# busybox (busybox-static), extracted, never installed, and a small ext4 image (e2fsprogs).
# They go to the cache ${SNOWFLOCK_LINUX_CACHE:-/var/cache/snowflock/linux-guest} and are copied to
# .cache/linux-guest/ in the repository, which the nested KVM host sees (test/nested shares the
# repository): vmlinuz, busybox, modules/*.ko (in load order: modules/order), disk.ext4, and
# versions (the two packages' versions). The tests build their initramfs from these
# (test/support/initramfs.ts) and copy the disk before writing it.
#
# As root, no stdin (CI=true is fine). Idempotent: a package is downloaded again only when apt's
# candidate version changed. Progress lines ("linux-assets: ...") on stderr.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

CACHE=${SNOWFLOCK_LINUX_CACHE:-/var/cache/snowflock/linux-guest}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/../.." && pwd -P)
OUT=$REPO/.cache/linux-guest
# shellcheck source=SCRIPTDIR/../lib/host-common.sh
. "$(dirname "$SELF")/../lib/host-common.sh"
log_as linux-assets 1 "$(date +%s.%N)"
build_start "the Linux guest assets"
install_missing dpkg-deb:dpkg apt-get:apt

find_kernel
# extract PACKAGE DIR: PACKAGE's candidate version extracted into $CACHE/DIR, unless it is there already.
extract() {
  local package=$1 dir=$CACHE/$2 version
  version=$(apt-cache policy "$package" | awk '$1 == "Candidate:" { print $2; exit }')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt_update
    version=$(apt-cache policy "$package" | awk '$1 == "Candidate:" { print $2; exit }')
  fi
  [ -n "$version" ] && [ "$version" != "(none)" ] || die "apt knows no $package (check /etc/apt/sources.list*)"
  if [ "$(cat "$dir/.package-version" 2>/dev/null)" != "$version" ]; then
    local tmp=$dir.tmp
    rm -rf "$tmp" && mkdir -p "$tmp/debs"
    say "downloading $package ($version)"
    apt_download "$tmp/debs" -q "$package=$version"
    dpkg-deb -x "$tmp"/debs/"${package}"_*.deb "$tmp/root"
    echo "$version" >"$tmp/root/.package-version"
    rm -rf "$dir" && mv "$tmp/root" "$dir" && rm -rf "$tmp"
  fi
  echo "$package $version" >>"$OUT/versions.tmp"
}
mkdir -p "$OUT"
rm -f "$OUT/versions.tmp"
extract "$KPKG" kernel
extract busybox-static busybox
[ -f "$CACHE/kernel/boot/vmlinuz-$KVER" ] || die "$KPKG has no /boot/vmlinuz-$KVER"
BUSYBOX=$CACHE/busybox/bin/busybox
[ -x "$BUSYBOX" ] || BUSYBOX=$CACHE/busybox/usr/bin/busybox
[ -x "$BUSYBOX" ] || die "busybox-static has no bin/busybox"
install -m 0644 "$CACHE/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
install -m 0755 "$BUSYBOX" "$OUT/busybox"
# Debian builds these as modules; each after what it needs (modinfo -F depends), crc32c_generic
# for ext4's checksums (asked for through the crypto API, not a symbol).
MODULES="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_mmio drivers/block/virtio_blk
  lib/crc16 fs/mbcache fs/jbd2/jbd2 crypto/crc32c_generic fs/ext4/ext4
  net/core/failover drivers/net/net_failover drivers/net/virtio_net"
rm -rf "$OUT/modules" && mkdir -p "$OUT/modules"
for module in $MODULES; do
  file=$CACHE/kernel/lib/modules/$KVER/kernel/$module.ko
  [ -f "$file" ] || die "$KPKG has no $module.ko"
  install -m 0644 "$file" "$OUT/modules/"
  basename "$module" >>"$OUT/modules/order"
done
# A 16 MiB ext4 disk with one file the tests read.
install_missing mkfs.ext4:e2fsprogs
disk_root=$(mktemp -d)
echo "snowflock test disk" >"$disk_root/hello.txt"
rm -f "$OUT/disk.ext4"
mkfs.ext4 -q -F -L sfdisk -d "$disk_root" "$OUT/disk.ext4" 16M
rm -rf "$disk_root"
mv "$OUT/versions.tmp" "$OUT/versions"
say "ready in $OUT: $(tr '\n' ' ' <"$OUT/versions")"
