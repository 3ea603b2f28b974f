#!/usr/bin/env bash
# Builds the nested Xen test host from Debian's packages: Xen 4.17 (xen-hypervisor-4.17-amd64,
# uncompressed for QEMU's -kernel), a dom0 (Debian's amd64 kernel, which has CONFIG_XEN_DOM0, and
# a `debootstrap --variant=minbase` userland with Xen's tools, packed whole as an initramfs), and a
# tiny PVH domU (the same kernel with a busybox initramfs that prints a line every second).
# test/xen/run.sh boots it under QEMU TCG.
#
# As root, no stdin. Idempotent: everything lives in ${SNOWFLOCK_XEN_CACHE:-/var/cache/snowflock/xen},
# and each stage is redone only when what it is made from changed:
#
#   debs/<pkg>/<version>/*.deb  the packages, downloaded with `apt-get download` (never installed here)
#   kernel-<release>/   linux-image-<release>-amd64, extracted         (key: its version)
#   xen                 boot/xen-4.17-amd64.gz, gunzipped: QEMU's -kernel (key: its version)
#   xen-paging          Xen built from bookworm's source package with memory paging
#                       (mem-paging.kconfig; key: version, fragment, the function that builds it)
#   rootfs/             debootstrap minbase of this host's Debian release (key: suite, mirror,
#                       packages, the function that builds it)
#   dom0root/           rootfs/ + Xen's userland (xen-utils-4.17, xenstore-utils, their libraries;
#                       extracted, not installed: no python3, no maintainer scripts), trimmed
#   base.cpio           dom0root/ as a newc archive
#   overlay.cpio        /init, the kernel modules dom0 needs, bun (baseline), the domU
#   initrd              base.cpio + overlay.cpio (the kernel unpacks concatenated archives in order)
#   vmlinuz, host.env   the dom0 kernel, and what run.sh needs to know (versions, paths)
#   stamp               hash of everything initrd was made from
#
# Progress lines ("xen-build: ...") go to stderr; nothing to stdout. The steps it shares with
# test/nested/build-host.sh are functions in test/lib/host-common.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

CACHE=${SNOWFLOCK_XEN_CACHE:-/var/cache/snowflock/xen}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
SELF=$HERE/$(basename "${BASH_SOURCE[0]}")
LIB=$HERE/../lib/host-common.sh
# shellcheck source=SCRIPTDIR/../lib/host-common.sh
. "$LIB"
XEN_RELEASE=4.17
log_as xen-build 1 "$(date +%s.%N)"

# As root; one build at a time (run.sh may be called concurrently).
build_start "the Xen host"

# ---------------------------------------------------------------------------------------------
# Host tools (busybox-static is not used here: the domU's comes from apt-get download).
install_missing qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio depmod:kmod flock:util-linux \
  busybox:busybox-static npm:npm /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring

# ---------------------------------------------------------------------------------------------
# Which Debian: this host's release and the mirror apt already uses (for debootstrap; the other
# packages come through the host's own apt configuration, security updates included).
debian_suite "the Xen host"
MIRROR=$(find_mirror "$SUITE")

# Candidate versions, in one apt-cache call: "pkg version" lines.
candidates() {
  apt-cache policy "$@" 2>/dev/null | awk '/^[^ ].*:$/ { p = substr($1, 1, length($1) - 1) } $1 == "Candidate:" && $2 != "(none)" { print p, $2 }'
}

# fetch PKG VERSION: the path of PKG_VERSION's .deb, downloaded into debs/ the first time.
fetch() {
  local pkg=$1 version=$2 dir deb
  dir=$CACHE/debs/$pkg/${version//:/%3a}
  deb=$(ls "$dir"/*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ]; then
    rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
    apt_download "$dir.tmp" -qq -o APT::Sandbox::User=root "$pkg=$version"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    deb=$(ls "$dir"/*.deb | head -1)
    for old in "$CACHE/debs/$pkg"/*; do [ "$old" != "$dir" ] && rm -rf "$old"; done
  fi
  echo "$deb"
}

# ---------------------------------------------------------------------------------------------
# What goes in: the kernel linux-image-amd64 points at, Xen, busybox-static; versions from apt.
find_kernel
VERSIONS=$(candidates "$KPKG" "xen-utils-$XEN_RELEASE" "xen-hypervisor-$XEN_RELEASE-amd64" busybox-static)
version_of() { awk -v p="$1" '$1 == p { print $2 }' <<<"$VERSIONS"; }
KPKG_VERSION=$(version_of "$KPKG")
XEN_VERSION=$(version_of "xen-utils-$XEN_RELEASE")
XEN_HV_VERSION=$(version_of "xen-hypervisor-$XEN_RELEASE-amd64")
BUSYBOX_VERSION=$(version_of busybox-static)
[ -n "$KPKG_VERSION" ] && [ -n "$XEN_VERSION" ] && [ -n "$BUSYBOX_VERSION" ] || die "apt has no candidate for $KPKG, xen-utils-$XEN_RELEASE or busybox-static"
# The hypervisor and its tools must be one build: libxenctrl talks the hypervisor's private
# domctl/sysctl interface of that exact version.
[ "$XEN_HV_VERSION" = "$XEN_VERSION" ] || die "xen-hypervisor-$XEN_RELEASE-amd64 ($XEN_HV_VERSION) and xen-utils-$XEN_RELEASE ($XEN_VERSION) differ in this apt's lists"

# ---------------------------------------------------------------------------------------------
# Stage 1: the kernel package, extracted. Used for dom0 and the domU alike.
KDIR=$CACHE/kernel-$KVER
if [ "$(cat "$KDIR/.package-version" 2>/dev/null)" != "$KPKG_VERSION" ]; then
  say "downloading $KPKG $KPKG_VERSION"
  deb=$(fetch "$KPKG" "$KPKG_VERSION")
  rm -rf "$KDIR.tmp"
  dpkg-deb -x "$deb" "$KDIR.tmp"
  [ -f "$KDIR.tmp/boot/vmlinuz-$KVER" ] || die "$KPKG has no /boot/vmlinuz-$KVER"
  grep -q '^CONFIG_XEN_DOM0=y' "$KDIR.tmp/boot/config-$KVER" || die "$KPKG is not built with CONFIG_XEN_DOM0"
  depmod -b "$KDIR.tmp" "$KVER" # the package leaves modules.dep to its postinst
  echo "$KPKG_VERSION" >"$KDIR.tmp/.package-version"
  rm -rf "$KDIR" && mv "$KDIR.tmp" "$KDIR"
  for old in "$CACHE"/kernel-*; do [ -d "$old" ] && [ "$old" != "$KDIR" ] && rm -rf "$old"; done
fi

# ---------------------------------------------------------------------------------------------
# Stage 2: Xen itself, gunzipped. QEMU loads it with -kernel (its multiboot header), the dom0
# kernel and initramfs as modules.
if [ "$(cat "$CACHE/xen.version" 2>/dev/null)" != "$XEN_VERSION" ] || [ ! -f "$CACHE/xen" ]; then
  say "downloading xen-hypervisor-$XEN_RELEASE-amd64 $XEN_VERSION"
  deb=$(fetch "xen-hypervisor-$XEN_RELEASE-amd64" "$XEN_VERSION")
  rm -rf "$CACHE/xen.tmp" && mkdir -p "$CACHE/xen.tmp"
  dpkg-deb -x "$deb" "$CACHE/xen.tmp"
  gz=$(ls "$CACHE"/xen.tmp/boot/xen-"$XEN_RELEASE"*-amd64.gz 2>/dev/null | head -1)
  [ -n "$gz" ] || die "xen-hypervisor-$XEN_RELEASE-amd64 has no /boot/xen-*.gz"
  gunzip -c "$gz" >"$CACHE/xen.new"
  mv "$CACHE/xen.new" "$CACHE/xen"
  rm -rf "$CACHE/xen.tmp"
  echo "$XEN_VERSION" >"$CACHE/xen.version"
fi

# ---------------------------------------------------------------------------------------------
# Stage 2b: Xen rebuilt from Debian's source package with memory paging (test/xen/mem-paging.kconfig
# appended to Debian's own debian/xen-kconfig). Only the hypervisor: Debian's 4.17 tools talk to
# it (the same domctl and sysctl interface versions). The source is pinned to bookworm's own
# package (the security archive lists its newer source but does not serve it); it comes through
# deb-src twins of this host's apt sources, in an apt state of its own (the host's apt
# configuration is left as it is). About 10 minutes of two cores, once.
PAGING_FRAGMENT=$HERE/mem-paging.kconfig
PAGING_SOURCE_VERSION=4.17.5+72-g01140da4e8-1
build_paging_xen() {
  local work=$CACHE/xen-src apt_dir=$CACHE/apt-src tree f
  install_missing dpkg-source:dpkg-dev gcc:gcc make:make bison:bison flex:flex python3:python3
  rm -rf "$apt_dir" "$work" && mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$work"
  : >"$apt_dir/sources.list"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$f"
  done >"$apt_dir/parts/host.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt_dir/parts/$(basename "$f")"
  done
  local apt=(apt-get -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts="$apt_dir/parts"
    -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache" -o APT::Sandbox::User=root)
  say "fetching the source of xen $PAGING_SOURCE_VERSION (deb-src)"
  "${apt[@]}" update -qq >&2
  # apt-get source unpacks with dpkg-source -x, which applies Debian's patch series.
  (cd "$work" && "${apt[@]}" source -qq "xen=$PAGING_SOURCE_VERSION" >"$CACHE/xen-paging-source.log" 2>&1) ||
    { tail -20 "$CACHE/xen-paging-source.log" >&2; die "apt-get source xen=$PAGING_SOURCE_VERSION failed (log: $CACHE/xen-paging-source.log)"; }
  tree=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'xen-*' | head -1)
  [ -n "$tree" ] && [ -f "$tree/debian/xen-kconfig" ] || die "the xen source package has no debian/xen-kconfig"
  cat "$tree/debian/xen-kconfig" "$PAGING_FRAGMENT" >"$tree/xen/.config"
  say "building Xen $PAGING_SOURCE_VERSION with memory paging (about 10 minutes)"
  if ! { make -C "$tree/xen" olddefconfig XEN_TARGET_ARCH=x86_64 && make -C "$tree/xen" -j"$(nproc)" XEN_TARGET_ARCH=x86_64; } \
      >"$CACHE/xen-paging-build.log" 2>&1; then
    tail -20 "$CACHE/xen-paging-build.log" >&2
    die "building Xen with memory paging failed (log: $CACHE/xen-paging-build.log)"
  fi
  grep -qx 'CONFIG_MEM_PAGING=y' "$tree/xen/.config" || die "olddefconfig dropped CONFIG_MEM_PAGING (see $PAGING_FRAGMENT)"
  cp "$tree/xen/xen" "$CACHE/xen-paging.new" && mv "$CACHE/xen-paging.new" "$CACHE/xen-paging"
  rm -rf "$work" "$apt_dir"
}
PAGING_KEY=$(printf '%s\n' "$PAGING_SOURCE_VERSION" "$(cat "$PAGING_FRAGMENT")" "$(declare -f build_paging_xen)" | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/xen-paging.key" 2>/dev/null)" != "$PAGING_KEY" ] || [ ! -f "$CACHE/xen-paging" ]; then
  rm -f "$CACHE/xen-paging.key"
  build_paging_xen
  echo "$PAGING_KEY" >"$CACHE/xen-paging.key"
fi

# ---------------------------------------------------------------------------------------------
# Stage 3: the dom0 root filesystem, minbase (+ kmod for modprobe, procps for ps/kill, iproute2 for
# the cluster link's bridge and the vif hotplug scripts).
ROOTFS_PACKAGES=kmod,procps,util-linux,mount,iproute2
build_rootfs() {
  local tmp=$CACHE/rootfs.tmp
  rm -rf "$tmp"
  say "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
  debootstrap_minbase "$ROOTFS_PACKAGES" "$tmp"
  chroot "$tmp" apt-get clean
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/* "$tmp"/var/log/* "$tmp"/debootstrap
  rm -rf "$CACHE/rootfs" && mv "$tmp" "$CACHE/rootfs"
}
# Keyed by what debootstrap is given and this function's text, not by the whole script.
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$ROOTFS_PACKAGES" "$(declare -f build_rootfs debootstrap_minbase)" | sha256sum | cut -c1-16)
rootfs_stage "$ROOTFS_KEY" "$CACHE/dom0root.stamp"

# ---------------------------------------------------------------------------------------------
# Stage 4: Xen's userland on top: xen-utils (xl, xenstored, xenconsoled, xen-init-dom0),
# xenstore-utils, xen-utils-common (xl's wrapper, /etc/xen) and the libraries they need that
# minbase lacks: the dependency closure, less what is already there and what only other tools
# need (python3 for pygrub; perl, udev, debconf for maintainer scripts that never run here).
USERLAND_ROOTS="xen-utils-$XEN_RELEASE xenstore-utils xen-utils-common"
USERLAND_SKIP='^(python3.*|libpython3.*|perl.*|libperl.*|debconf.*|cdebconf|udev|ucf|lsb-base|adduser|install-info|sensible-utils|xen-hypervisor-.*|init-system-helpers)$'
userland_packages() { # the closure, breadth first, one apt-cache call per level
  local have seen=" " level=($USERLAND_ROOTS) next p
  have=" $(dpkg-query --admindir="$CACHE/rootfs/var/lib/dpkg" -W -f '${Package} ' 2>/dev/null) "
  while [ ${#level[@]} -gt 0 ]; do
    for p in "${level[@]}"; do seen="$seen$p "; echo "$p"; done
    next=()
    for p in $(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "${level[@]}" 2>/dev/null |
        awk '$1 ~ /Depends:$/ && $2 !~ /^</ { sub(/:any$/, "", $2); print $2 }' | sort -u); do
      [[ "$p" =~ $USERLAND_SKIP ]] && continue
      case "$have$seen" in *" $p "*) continue ;; esac
      next+=("$p")
    done
    level=("${next[@]}")
  done
}
build_dom0root() {
  local tmp=$CACHE/dom0root.tmp x=$CACHE/userland.tmp pkg version d
  rm -rf "$tmp" "$x"
  say "downloading and extracting ${#USERLAND[@]} packages: ${USERLAND[*]}"
  mkdir -p "$x"
  while read -r pkg version; do
    dpkg-deb -x "$(fetch "$pkg" "$version")" "$x"
  done <<<"$USERLAND_VERSIONS"
  # Merged /usr: bin, sbin, lib* are symlinks into usr/ in the rootfs; a package's files there
  # go to usr/ (copying a real directory over the symlink would replace it).
  for d in bin sbin lib lib32 lib64 libx32; do
    if [ -d "$x/$d" ] && [ ! -L "$x/$d" ]; then
      mkdir -p "$x/usr/$d" && cp -a "$x/$d/." "$x/usr/$d/" && rm -rf "${x:?}/$d"
    fi
  done
  cp -a "$CACHE/rootfs" "$tmp"
  cp -a "$x/." "$tmp/"
  rm -rf "$x"
  ldconfig -r "$tmp"
  rm -rf "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* "$tmp"/usr/share/locale/* \
    "$tmp"/usr/share/lintian "$tmp"/usr/share/zoneinfo/right "$tmp"/usr/share/bash-completion
  [ -x "$tmp/usr/lib/xen-$XEN_RELEASE/bin/xl" ] || die "xen-utils-$XEN_RELEASE has no /usr/lib/xen-$XEN_RELEASE/bin/xl"
  rm -rf "$CACHE/dom0root" && mv "$tmp" "$CACHE/dom0root"
}
# Keyed by the Xen version (the libraries' versions follow it; the closure takes a few seconds of
# apt-cache, so it is only worked out when the key changes) and the functions' text.
DOM0ROOT_KEY=$(printf '%s\n' "$ROOTFS_KEY" "$XEN_VERSION" "$USERLAND_ROOTS" "$USERLAND_SKIP" "$(declare -f userland_packages build_dom0root)" | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/dom0root.stamp" 2>/dev/null)" != "$DOM0ROOT_KEY" ] || [ ! -f "$CACHE/base.cpio" ]; then
  rm -f "$CACHE/dom0root.stamp" "$CACHE/base.cpio"
  mapfile -t USERLAND < <(userland_packages | sort -u)
  USERLAND_VERSIONS=$(candidates "${USERLAND[@]}" | sort)
  [ "$(echo "$USERLAND_VERSIONS" | wc -l)" = "${#USERLAND[@]}" ] || die "apt has no candidate for some of: ${USERLAND[*]}"
  build_dom0root
  echo "$USERLAND_VERSIONS" >"$CACHE/dom0root.packages"
  echo "$DOM0ROOT_KEY" >"$CACHE/dom0root.stamp"
fi

# ---------------------------------------------------------------------------------------------
# Stage 5: the initrd. Rebuilt when this script (or its library), the kernel, dom0's root or bun
# changed.
BUN=$(bash "$HERE/bun-baseline.sh")
BUN_ID=$(stat -c '%n %s %Y' "$BUN")
STAMP=$(printf '%s\n' "$(sha256sum <"$SELF")" "$(sha256sum <"$LIB")" "$KPKG $KPKG_VERSION" "$DOM0ROOT_KEY" "$BUSYBOX_VERSION" "$XEN_VERSION" "$BUN_ID" | sha256sum | cut -c1-32)
initrd_current "$STAMP" initrd vmlinuz xen && exit 0
rm -f "$CACHE/stamp"

pack_base "$CACHE/dom0root" "dom0's root filesystem"

say "assembling the overlay: kernel $KVER modules, bun $("$BUN" --version) (baseline), the domU, /init"
OV=$CACHE/overlay.tmp
rm -rf "$OV"
# Only paths under usr/, etc/, root/ and the new top-level /init: never lib/, bin/, sbin/ (symlinks
# in the merged-/usr rootfs, which a directory of the same name in a later archive would replace).
DOMU_DIR=/usr/local/share/snowflock-xen/domu
mkdir -p "$OV/usr/lib/modules/$KVER" "$OV/usr/local/bin" "$OV$DOMU_DIR" "$OV/etc" "$OV/root"

# Kernel modules dom0 needs, and their dependencies: Xen's device drivers (privcmd, evtchn,
# gntdev, gntalloc, xenfs, the block/net backends), virtio PCI and 9p for the shares, virtio-net
# and the bridge for the cluster link of a multi-host run (run.sh, SNOWFLOCK_XEN_HOSTS).
KMOD=$KDIR/lib/modules/$KVER
want=$(cd "$KMOD" && awk -F: '{ print $1 }' modules.dep | grep -E \
  '^kernel/(drivers/xen/|drivers/block/(xen-blkback/|loop)|drivers/net/xen-netback/|drivers/virtio/|drivers/char/(virtio_console|hw_random/virtio)|fs/(9p|netfs|fscache)/|net/9p/|net/bridge/|drivers/net/(tun|veth|dummy|virtio_net)\.ko)' || true)
copy_modules "$KMOD" "$KVER" "$OV" "$want"

overlay_bun "$BUN" "$OV"

# The domU: Debian's kernel (PVH entry) and a busybox initramfs whose /init prints a line every
# second on its console (hvc0; xenconsoled logs it to /var/log/xen/console/guest-<name>.log).
say "building the domU (kernel $KVER, busybox $BUSYBOX_VERSION)"
BB=$CACHE/busybox.tmp
rm -rf "$BB" && mkdir -p "$BB/x" "$BB/root/bin" "$BB/root/proc" "$BB/root/sys" "$BB/root/dev"
dpkg-deb -x "$(fetch busybox-static "$BUSYBOX_VERSION")" "$BB/x"
cp "$BB/x/bin/busybox" "$BB/root/bin/busybox"
for applet in sh mount cat cut echo sleep uname; do ln -s busybox "$BB/root/bin/$applet"; done
# The network frontend, for domUs with a vif (`insmod /lib/modules/xen-netfront.ko`; it has no dependencies).
mkdir -p "$BB/root/lib/modules"
cp "$KMOD/kernel/drivers/net/xen-netfront.ko" "$BB/root/lib/modules/xen-netfront.ko"
cat >"$BB/root/init" <<'DOMU'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "snowflock-domu: up, kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"
i=0
while :; do
  i=$((i + 1))
  echo "snowflock-domu: tick $i uptime $(cut -d' ' -f1 /proc/uptime)"
  sleep 1
done
DOMU
chmod 0755 "$BB/root/init"
(cd "$BB/root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --owner=0:0 --quiet | gzip -9) >"$OV$DOMU_DIR/initrd.gz"
cp "$KDIR/boot/vmlinuz-$KVER" "$OV$DOMU_DIR/vmlinuz"
cat >"$OV$DOMU_DIR/pvh.cfg" <<CFG
# A PVH domU for tests: xl create $DOMU_DIR/pvh.cfg 'name="..."'
type = "pvh"
name = "snowflock-domu"
kernel = "$DOMU_DIR/vmlinuz"
ramdisk = "$DOMU_DIR/initrd.gz"
extra = "console=hvc0 quiet"
memory = 128
vcpus = 1
# Never trap RDTSC: QEMU's emulated AMD-V has no NRIP save, so Xen decodes each trapped RDTSC
# itself, and under it the guest now and then triple-faulted at one (TSC calibration at boot,
# pvclock_clocksource_read right after a suspend is cancelled). Clones stay on this host's TSC.
tsc_mode = "native"
# Every test domU on pCPU 1 (dom0 keeps both). Unpinned, a parent domU whose clones ran with memory
# on demand died now and then (3 runs of 3 within 8 sf clone rounds; 0 of 8 eager): a triple fault
# with Xen's own RIP and stack in its saved registers. Pinned, or with one pCPU, 8 of 8 rounds
# passed. Clones copy this from their parent's configuration.
cpus = "1"
# A test domU never reboots or crashes on its own: keep it for a look (xl would recreate it
# under a new domid on a reboot, which hides what happened).
on_reboot = "preserve"
on_crash = "preserve"
CFG
rm -rf "$BB"

overlay_etc "$OV" xen-dom0

# /init: mounts, Xen's modules and daemons, the shares, then the command the host left in the
# control share (/run/xenhost: argv, env and cwd, NUL-separated); its exit status goes back there.
{
  cat <<INIT
#!/bin/bash
XEN_BIN=/usr/lib/xen-$XEN_RELEASE/bin
KVER=$KVER
DOMU_DIR=$DOMU_DIR
INIT
  cat <<'INIT'
export PATH=$XEN_BIN:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
CTL=/run/xenhost
log() { echo "xen-init: $*" >/dev/console; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
ctl_mounted=0
finish() { # write back what the host may want to see, power off
  if [ "$ctl_mounted" = 1 ]; then
    dmesg >"$CTL/dmesg.txt" 2>/dev/null
    xl dmesg >"$CTL/xl-dmesg.txt" 2>/dev/null
    cp -r /var/log/xen "$CTL/xen-logs" 2>/dev/null
    sync
  fi
  echo o >/proc/sysrq-trigger
  sleep 30
  exit 1
}

INIT
  init_fail
  init_mounts
  cat <<'INIT'
mkdir -p /run/lock
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
hostname xen-dom0
log "init at $(uptime_s)s"

modprobe -a virtio_pci 9pnet_virtio 9p || log "modprobe of virtio/9p failed"
mkdir -p "$CTL"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none ctl "$CTL" || fail mount "cannot mount the control share"
ctl_mounted=1
log "control share at $(uptime_s)s"
INIT
  init_repo_share
  cat <<'INIT'

# Xen: the drivers, xenfs, then the toolstack's daemons (what Debian's xencommons does).
modprobe -a xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd || log "modprobe of Xen drivers failed"
# The block and network backends (for domUs with disks and NICs) in the background: loading
# (and signature-checking) modules is slow under TCG, and nothing needs them yet.
modprobe -a xen-blkback xen-netback loop </dev/null >/dev/null 2>&1 &
mount -t xenfs xenfs /proc/xen || fail xen "cannot mount xenfs"
grep -qw control_d /proc/xen/capabilities || fail xen "not dom0: /proc/xen/capabilities says '$(cat /proc/xen/capabilities)'"
[ -c /dev/xen/privcmd ] || fail xen "/dev/xen/privcmd did not appear"
log "Xen drivers at $(uptime_s)s"
mkdir -p /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/lib/xenstored
export XENSTORED_ROOTDIR=/var/lib/xenstored
if [ -x "$XEN_BIN/oxenstored" ]; then xenstored=oxenstored; else xenstored=xenstored; fi
"$XEN_BIN/$xenstored" --pid-file=/run/xenstored.pid >/var/log/xen/xenstored.out 2>&1 || fail xen "$xenstored did not start: $(cat /var/log/xen/xenstored.out)"
for i in $(seq 100); do xenstore-read /local >/dev/null 2>&1 && break; sleep 0.1; done
log "$xenstored up at $(uptime_s)s"
"$XEN_BIN/xen-init-dom0" >/var/log/xen/xen-init-dom0.out 2>&1 || fail xen "xen-init-dom0 failed: $(cat /var/log/xen/xen-init-dom0.out)"
"$XEN_BIN/xenconsoled" --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console || fail xen "xenconsoled did not start"
log "xen toolstack up at $(uptime_s)s ($xenstored, xenconsoled)"

ip link set lo up
# The cluster link of a multi-host run: run.sh left "ADDRESS/PREFIX MAC" in $CTL/network. The NIC
# joins bridge sfbr0, which takes the address and MAC; the domUs' vifs (bridge=sfbr0) join it too,
# so domUs on every host share one segment with the dom0s.
if [ -s "$CTL/network" ]; then
  read -r address mac mtu <"$CTL/network"
  modprobe -a virtio_net bridge || fail network "modprobe virtio_net bridge failed"
  nic=
  for i in $(seq 100); do
    nic=$(ls /sys/class/net | grep -v -e '^lo$' -e '^sfbr' | head -1)
    [ -n "$nic" ] && break
    sleep 0.1
  done
  [ -n "$nic" ] || fail network "no network interface appeared"
  # The bridge's MTU is set, not left to follow its smallest port: a domU's vif joining at 1500
  # would take the segment's jumbo frames away from dom0 (Xen's vif-bridge gives vifs the bridge's).
  { ip link set "$nic" mtu "${mtu:-1500}" && ip link add sfbr0 type bridge && ip link set sfbr0 address "$mac" &&
    ip link set "$nic" master sfbr0 && ip link set sfbr0 mtu "${mtu:-1500}" &&
    ip link set "$nic" up && ip addr add "$address" dev sfbr0 && ip link set sfbr0 up; } ||
    fail network "cannot set up bridge sfbr0 on $nic (MTU ${mtu:-1500})"
  log "cluster link: $nic in sfbr0, $address, MTU ${mtu:-1500} at $(uptime_s)s"
fi

INIT
  init_command
  cat <<'INIT'
# The command's output goes to a file in the control share, which run.sh streams to its stdout
# as it grows (a virtio serial port would be the obvious channel, but in this PV dom0 a write to
# one never completed).
env -i "${envv[@]}" "SNOWFLOCK_XEN_DOMU_DIR=$DOMU_DIR" "${argv[@]}" </dev/null >>"$CTL/output" 2>&1
status=$?
INIT
  init_status
} >"$OV/init"

finish_build "$OV" "$KDIR/boot/vmlinuz-$KVER" "$STAMP" KVER KPKG_VERSION XEN_VERSION SUITE DOMU_DIR
say "built: Xen $XEN_VERSION, dom0 kernel $KVER ($KPKG_VERSION), initrd $(du -m "$CACHE/initrd" | cut -f1) MiB"
