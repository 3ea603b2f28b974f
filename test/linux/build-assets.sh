#!/usr/bin/env bash
# Builds the assets of the Linux guest tests from Debian's packages: the stock kernel
# (linux-image-amd64's bzImage) and a static busybox (busybox-static), extracted, never installed.
# They go to the cache ${SNOWFLOCK_LINUX_CACHE:-/var/cache/snowflock/linux-guest} and are copied to
# .cache/linux-guest/ in the repository, which the nested KVM host sees (test/nested shares the
# repository): vmlinuz, busybox, and versions (the two packages' versions). The tests build their
# initramfs from these (test/support/initramfs.ts).
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
mv "$OUT/versions.tmp" "$OUT/versions"
say "ready in $OUT: $(tr '\n' ' ' <"$OUT/versions")"
