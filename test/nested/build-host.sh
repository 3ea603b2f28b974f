#!/usr/bin/env bash
# Builds the nested KVM test host: a Debian kernel and a Debian userland packed as an initramfs,
# booted under QEMU TCG (`-cpu max` offers SVM with nested paging) by test/nested/run.sh, where the
# kernel's kvm-amd gives a working /dev/kvm on machines that have none.
#
# As root, no stdin (CI=true is fine). Idempotent: everything lives in the cache dir
# ${SNOWFLOCK_NESTED_CACHE:-/var/cache/snowflock/nested}, and each stage is redone only when
# what it is made from changed (this script, the kernel package's version, the host's bun):
#
#   kernel-<ver>/     the extracted linux-image package (never installed on this machine)
#   rootfs/           `debootstrap --variant=minbase` of this host's Debian release, trimmed
#   base.cpio         rootfs/ as a newc archive
#   overlay.cpio      /init, kernel modules (a subset, depmod'ed), bun, a few /etc files
#   initrd            base.cpio + overlay.cpio (the kernel unpacks concatenated archives in order)
#   vmlinuz, host.env what run.sh boots, and the kernel release
#   stamp             hash of everything the initrd was made from
#
# Prints progress lines ("nested-build: ...") on stderr. Output: nothing on stdout. The steps it
# shares with test/xen/build-host.sh are functions in test/lib/host-common.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

CACHE=${SNOWFLOCK_NESTED_CACHE:-/var/cache/snowflock/nested}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
LIB=$(dirname "$SELF")/../lib/host-common.sh
# shellcheck source=SCRIPTDIR/../lib/host-common.sh
. "$LIB"
# Each step with the time since the build began: a first build takes minutes.
log_as nested-build 1 "$(date +%s.%N)"

# As root; one build at a time (run.sh may be called concurrently).
build_start "the nested host"

# ---------------------------------------------------------------------------------------------
# Host tools.
install_missing qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio depmod:kmod flock:util-linux \
  /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring

# ---------------------------------------------------------------------------------------------
# Which Debian: this host's release and the mirror apt already uses.
debian_suite "the nested host"
MIRROR=$(find_mirror "$SUITE")

# ---------------------------------------------------------------------------------------------
# The kernel: whatever linux-image-amd64 depends on in this host's apt lists.
find_kernel
KPKG_VERSION=$(apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2; exit }')
KDIR=$CACHE/kernel-$KVER

# ---------------------------------------------------------------------------------------------
# Stage 1: the kernel package, extracted (not installed).
build_kernel() {
  local tmp="$CACHE/kernel.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp/debs"
  say "downloading $KPKG ($KPKG_VERSION)"
  apt_download "$tmp/debs" -q "$KPKG=$KPKG_VERSION"
  say "extracting $KPKG"
  dpkg-deb -x "$tmp"/debs/"${KPKG}"_*.deb "$tmp/root"
  [ -f "$tmp/root/boot/vmlinuz-$KVER" ] || die "$KPKG has no /boot/vmlinuz-$KVER"
  depmod -b "$tmp/root" "$KVER"
  echo "$KPKG_VERSION" >"$tmp/root/.package-version"
  rm -rf "$tmp/debs" "$KDIR"
  mv "$tmp/root" "$KDIR"
  rm -rf "$tmp"
}
if [ "$(cat "$KDIR/.package-version" 2>/dev/null)" != "$KPKG_VERSION" ]; then
  build_kernel
fi
# Old kernels.
for old in "$CACHE"/kernel-*; do
  [ -d "$old" ] && [ "$old" != "$KDIR" ] && rm -rf "$old"
done

# ---------------------------------------------------------------------------------------------
# Stage 2: the root filesystem. What the tests run: bun (copied in later), ip/ss/tc/bridge
# (iproute2; `ip netns`), nft (nftables), sh, cat, sleep, kill (procps), modprobe (kmod, for the
# kernel's module autoloading: veth, bridge, nf_tables, sch_htb, ...).
# SNOWFLOCK_NESTED_EXTRA_PACKAGES (comma-separated) adds packages, e.g. qemu-system-x86 for the
# bench's QEMU peer; give such a host a cache of its own (SNOWFLOCK_NESTED_CACHE), so the tests'
# host is not rebuilt for it.
PACKAGES=iproute2,nftables,procps,kmod,util-linux,mount,iputils-ping,psmisc,less${SNOWFLOCK_NESTED_EXTRA_PACKAGES:+,$SNOWFLOCK_NESTED_EXTRA_PACKAGES}
build_rootfs() {
  local tmp="$CACHE/rootfs.tmp"
  rm -rf "$tmp"
  say "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
  debootstrap_minbase "$PACKAGES" "$tmp"
  say "trimming the root filesystem"
  chroot "$tmp" apt-get clean
  rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/* "$tmp"/var/log/* \
    "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* \
    "$tmp"/usr/share/locale/* "$tmp"/usr/share/lintian "$tmp"/usr/share/zoneinfo/right \
    "$tmp"/debootstrap
  rm -rf "$CACHE/rootfs"
  mv "$tmp" "$CACHE/rootfs"
}
# The rootfs is keyed by what debootstrap is given and by this function's own text, not by the
# whole script: editing /init should not cost a new debootstrap.
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "$(declare -f build_rootfs debootstrap_minbase)" | sha256sum | cut -c1-16)
rootfs_stage "$ROOTFS_KEY" "$CACHE/base.cpio"

# ---------------------------------------------------------------------------------------------
# Stage 3: the initrd. Rebuilt when this script (or its library), the kernel, the rootfs or bun
# changed.
BUN=$(readlink -f "$(command -v bun)" 2>/dev/null) || die "bun is not on PATH"
[ -x "$BUN" ] || die "bun is not on PATH"
BUN_ID=$(stat -c '%n %s %Y' "$BUN")
STAMP=$(printf '%s\n' "$(sha256sum <"$SELF")" "$(sha256sum <"$LIB")" "$KPKG $KPKG_VERSION" "$ROOTFS_KEY" "$BUN_ID" | sha256sum | cut -c1-32)
initrd_current "$STAMP" initrd vmlinuz && exit 0
rm -f "$CACHE/stamp"

pack_base "$CACHE/rootfs" "the root filesystem"

say "assembling the overlay (kernel $KVER modules, bun $("$BUN" --version), /init)"
OV=$CACHE/overlay.tmp
rm -rf "$OV"
# Only paths under usr/ (never lib/, bin/, sbin/: in the merged-/usr rootfs those are symlinks, and
# a directory of the same name in a later archive would replace them).
mkdir -p "$OV/usr/lib/modules/$KVER" "$OV/usr/local/bin" "$OV/etc" "$OV/root"

# Kernel modules: KVM, 9p over virtio, virtio console/rng, all of net/ (bridge, veth's friends,
# netfilter, sched) and what the tests' network devices need; plus their dependencies.
KMOD=$KDIR/lib/modules/$KVER
want=$(cd "$KMOD" && awk -F: '{ print $1 }' modules.dep | grep -E \
  '^kernel/(arch/x86/(kvm|crypto)|virt|crypto|lib|mm|net|fs/(9p|netfs|fscache|overlayfs|fuse)|drivers/(virtio|char|crypto/ccp|net/[^/]+\.ko|block/virtio_blk))' || true)
# Leave out what no test uses: radio, storage and exotic protocols.
want=$(printf '%s\n' $want | grep -vE '^kernel/net/(wireless|mac80211|bluetooth|ceph|sunrpc|rxrpc|nfc|ieee802154|mac802154|batman-adv|tipc|rds|smc|can|atm|appletalk|ax25|netrom|rose|x25|phonet|caif|6lowpan|qrtr|dsa|nfc|l2tp|dccp|sctp)/' || true)
# With their dependencies, depmod'ed (basedir usr: the overlay keeps them at usr/lib/modules).
copy_modules "$KMOD" "$KVER" "$OV" "$want"

overlay_bun "$BUN" "$OV"
overlay_etc "$OV" nested

# /init: mounts, modules, the shares, /dev/kvm, then the command the host left in the control
# share (/run/nested: argv, env and cwd, NUL-separated), its exit status written back there.
{
  cat <<'INIT'
#!/bin/bash
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
CTL=/run/nested
log() { echo "nested-init: $*" >/dev/ttyS0; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
ctl_mounted=0
finish() { # write back what the host may want to see, power off
  [ "$ctl_mounted" = 1 ] && dmesg >"$CTL/dmesg.txt" 2>/dev/null
  sync
  echo o >/proc/sysrq-trigger
  sleep 10
  exit 1
}

INIT
  init_fail
  init_mounts
  cat <<'INIT'
mkdir -p /run/lock /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ln -sf /proc/self/fd /dev/fd; ln -sf /proc/self/fd/0 /dev/stdin; ln -sf /proc/self/fd/1 /dev/stdout; ln -sf /proc/self/fd/2 /dev/stderr
hostname nested
ip link set lo up
log "init at $(uptime_s)s"

kvm_module=
grep -qw svm /proc/cpuinfo && kvm_module=kvm_amd
grep -qw vmx /proc/cpuinfo && kvm_module=kvm_intel
modprobe -a virtio_pci virtio_console virtio_rng 9pnet_virtio 9p $kvm_module || log "modprobe failed"
mkdir -p "$CTL"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none ctl "$CTL" || fail mount "cannot mount the control share"
ctl_mounted=1

INIT
  init_repo_share
  cat <<'INIT'

[ -n "$kvm_module" ] || fail kvm "the virtual CPU offers neither svm nor vmx (QEMU -cpu max has svm)"
[ -c /dev/kvm ] || fail kvm "/dev/kvm did not appear after modprobe $kvm_module: $(dmesg | grep -iE 'kvm|svm|vmx' | tail -3 | tr '\n' ' ')"

# SNOWFLOCK_NESTED_DEBUG=1 on the host: a root shell on the virtio port "debug" (run.sh prints
# how to reach it). devtmpfs names the port /dev/vportNpM; its name is in sysfs (no udev here).
# The port's name arrives a little after the module loads, so look for it in the loop; a port
# can be open once at a time, hence <> and one descriptor for all three.
if [ "$(cat "$CTL/debug" 2>/dev/null)" = 1 ]; then
  setsid bash -c '
    while :; do
      for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = debug ] && PS1="nested# " bash --norc -i <>"/dev/${p##*/}" >&0 2>&0
      done
      sleep 3
    done' </dev/null >/dev/null 2>&1 &
fi

# Hold one empty VM for the whole run. KVM flips a static key in __schedule (preempt notifiers)
# when the first VM is created and the last one destroyed, and every flip patches hot kernel
# text while both vCPUs run it, which TCG's self-modifying-code handling copes with badly.
perl -e 'open(my $k, "+<", "/dev/kvm") or exit 1; defined(ioctl($k, 0xAE01, 0)) or exit 2; sleep' </dev/null >/dev/null 2>&1 &

out=/dev/hvc0
[ -c "$out" ] || out=/dev/ttyS0
# Bytes through unchanged: no \n -> \r\n on the way to the host. hvc resets its termios at the
# last close, so keep one descriptor open (3) and set it there.
exec 3<>"$out"
stty -opost -echo <&3 2>/dev/null
INIT
  init_command
  cat <<'INIT'
# On the host the output is usually a pipe (CI, tee): then give the command a pipe too, not the
# console's tty, so it prints as it would there (no colours, no progress redraws).
if [ "$(cat "$CTL/tty" 2>/dev/null)" = 1 ]; then
  env -i "${envv[@]}" "${argv[@]}" </dev/null >&3 2>&1 3>&-
  status=$?
else
  env -i "${envv[@]}" "${argv[@]}" </dev/null 2>&1 3>&- | cat >&3
  status=${PIPESTATUS[0]}
fi
exec 3>&-
INIT
  init_status
} >"$OV/init"

finish_build "$OV" "$KDIR/boot/vmlinuz-$KVER" "$STAMP" KVER KPKG_VERSION SUITE
say "built: kernel $KVER ($KPKG_VERSION), initrd $(du -m "$CACHE/initrd" | cut -f1) MiB"
