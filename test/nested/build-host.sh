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
# Prints progress lines ("nested-build: ...") on stderr. Output: nothing on stdout.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

CACHE=${SNOWFLOCK_NESTED_CACHE:-/var/cache/snowflock/nested}
SELF=$(readlink -f "${BASH_SOURCE[0]}")
T0=$(date +%s.%N)
# Each step with the time since the build began: a first build takes minutes.
say() { printf 'nested-build: [%5.1fs] %s\n' "$(awk -v s="$T0" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')" "$*" >&2; }
die() { printf 'nested-build: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and builds a root filesystem)"
[ "$(uname -m)" = x86_64 ] || die "needs an x86_64 host"
umask 022
mkdir -p "$CACHE"
chmod 0755 "$CACHE"

# One build at a time (run.sh may be called concurrently).
exec 9>"$CACHE/build.lock"
if ! flock -n 9; then
  say "waiting for another build of the nested host"
  flock 9
fi

# ---------------------------------------------------------------------------------------------
# Host tools.
apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  say "apt-get update"
  apt-get -o DPkg::Lock::Timeout=900 update -qq >&2
  apt_updated=1
}
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v cpio >/dev/null || need+=(cpio)
command -v depmod >/dev/null || need+=(kmod)
command -v flock >/dev/null || need+=(util-linux)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  apt_update
  say "installing ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# ---------------------------------------------------------------------------------------------
# Which Debian: this host's release and the mirror apt already uses.
. /etc/os-release
[ "${ID:-}" = debian ] || die "this host is ${ID:-unknown}; the nested host is built from Debian's archive"
SUITE=${VERSION_CODENAME:-}
[ -n "$SUITE" ] || die "/etc/os-release has no VERSION_CODENAME"

find_mirror() {
  local f uri suites
  # deb822 .sources: the stanza whose Suites names the release itself (not -security/-updates).
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        u = ""; s = 0; enabled = 1
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, a, /[ \t]+/); u = a[1] }
          if ($i ~ /^Suites:/) { n = split($i, b, /[ \t]+/); for (j = 2; j <= n; j++) if (b[j] == suite) s = 1 }
          if ($i ~ /^Enabled:[ \t]*no/) enabled = 0
        }
        if (u != "" && s && enabled) { print u; exit }
      }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  # One-line format.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$SUITE" '$1 == "deb" { sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, ""); split($0, a, /[ \t]+/); if (a[2] == suite) { print a[1]; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}
MIRROR=$(find_mirror)

# ---------------------------------------------------------------------------------------------
# The kernel: whatever linux-image-amd64 depends on in this host's apt lists.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
KPKG=$(kernel_package)
if [ -z "$KPKG" ]; then
  apt_update
  KPKG=$(kernel_package)
fi
[ -n "$KPKG" ] || die "apt knows no linux-image-amd64 (check /etc/apt/sources.list*)"
KVER=${KPKG#linux-image-}
KPKG_VERSION=$(apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2; exit }')
KDIR=$CACHE/kernel-$KVER

# ---------------------------------------------------------------------------------------------
# Stage 1: the kernel package, extracted (not installed).
build_kernel() {
  local tmp="$CACHE/kernel.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp/debs"
  say "downloading $KPKG ($KPKG_VERSION)"
  if ! (cd "$tmp/debs" && apt-get download -q "$KPKG=$KPKG_VERSION" >&2 2>/dev/null); then
    apt_update
    (cd "$tmp/debs" && apt-get download -q "$KPKG=$KPKG_VERSION" >&2)
  fi
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
PACKAGES=iproute2,nftables,procps,kmod,util-linux,mount,iputils-ping,psmisc,less
build_rootfs() {
  local tmp="$CACHE/rootfs.tmp"
  rm -rf "$tmp"
  say "debootstrap --variant=minbase $SUITE from $MIRROR (a few minutes)"
  if ! debootstrap --variant=minbase --components=main --include="$PACKAGES" \
      --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $CACHE/debootstrap.log)"
  fi
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
ROOTFS_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$PACKAGES" "$(declare -f build_rootfs)" | sha256sum | cut -c1-16)
if [ "$(cat "$CACHE/rootfs.stamp" 2>/dev/null)" != "$ROOTFS_KEY" ] || [ ! -x "$CACHE/rootfs/bin/sh" ]; then
  rm -f "$CACHE/rootfs.stamp" "$CACHE/base.cpio"
  build_rootfs
  echo "$ROOTFS_KEY" >"$CACHE/rootfs.stamp"
fi

# ---------------------------------------------------------------------------------------------
# Stage 3: the initrd. Rebuilt when this script, the kernel, the rootfs or bun changed.
BUN=$(readlink -f "$(command -v bun)" 2>/dev/null) || die "bun is not on PATH"
[ -x "$BUN" ] || die "bun is not on PATH"
BUN_ID=$(stat -c '%n %s %Y' "$BUN")
STAMP=$(printf '%s\n' "$(sha256sum <"$SELF")" "$KPKG $KPKG_VERSION" "$ROOTFS_KEY" "$BUN_ID" | sha256sum | cut -c1-32)
if [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$STAMP" ] && [ -f "$CACHE/initrd" ] && [ -f "$CACHE/vmlinuz" ]; then
  exit 0
fi
rm -f "$CACHE/stamp"

pack() { # DIR OUT: a newc archive of DIR's contents, root-owned
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$2.tmp"
  mv "$2.tmp" "$2"
}

if [ ! -f "$CACHE/base.cpio" ]; then
  say "packing the root filesystem"
  pack "$CACHE/rootfs" "$CACHE/base.cpio"
fi

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
closure=$( (cd "$KMOD" && for m in $want; do echo "$m"; grep -E "^$m:" modules.dep | cut -d: -f2 | tr ' ' '\n'; done) | grep -v '^$' | sort -u)
(cd "$KMOD" && printf '%s\n' $closure | cpio -pdm --quiet "$OV/usr/lib/modules/$KVER")
cp "$KMOD"/modules.order "$KMOD"/modules.builtin "$KMOD"/modules.builtin.modinfo "$OV/usr/lib/modules/$KVER/" 2>/dev/null || true
# depmod of the subset (basedir usr: the overlay keeps them at usr/lib/modules). Every module's
# dependencies came along (modules.dep lists them transitively); Debian's System.map is a
# placeholder, so `depmod -e` cannot check symbols.
depmod -b "$OV/usr" "$KVER"

cp "$BUN" "$OV/usr/local/bin/bun"
chmod 0755 "$OV/usr/local/bin/bun"
ln -s bun "$OV/usr/local/bin/bunx"

printf 'nested\n' >"$OV/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tnested\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$OV/etc/hosts"
: >"$OV/etc/resolv.conf"

# /init: mounts, modules, the shares, /dev/kvm, then the command the host left in the control
# share (/run/nested: argv, env and cwd, NUL-separated), its exit status written back there.
cat >"$OV/init" <<'INIT'
#!/bin/bash
export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
CTL=/run/nested
log() { echo "nested-init: $*" >/dev/ttyS0; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
finish() { # finish: write back, power off
  dmesg >"$CTL/dmesg.txt" 2>/dev/null
  sync
  echo o >/proc/sysrq-trigger
  sleep 10
  exit 1
}
fail() { # fail STAGE MESSAGE
  log "FAILED at $1: $2"
  if [ "$ctl_mounted" = 1 ]; then printf '%s: %s\n' "$1" "$2" >"$CTL/error"; finish; fi
  echo o >/proc/sysrq-trigger; sleep 10; exit 1
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
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
ctl_mounted=0
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none ctl "$CTL" || fail mount "cannot mount the control share"
ctl_mounted=1

cache=$(cat "$CTL/cache" 2>/dev/null || echo loose)
repo=$(cat "$CTL/repo")
mkdir -p "$repo"
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,cache=$cache,access=client" repo "$repo" || fail mount "cannot mount the repository at $repo"

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
mapfile -d '' -t argv <"$CTL/argv"
mapfile -d '' -t envv <"$CTL/env"
cwd=$(cat "$CTL/cwd")
uptime_s >"$CTL/booted"
log "running ${argv[*]} in $cwd at $(uptime_s)s"
cd "$cwd" || fail cwd "cannot enter $cwd"
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
log "exit status $status at $(uptime_s)s"
echo "$status" >"$CTL/status"
finish
INIT
chmod 0755 "$OV/init"

pack "$OV" "$CACHE/overlay.cpio"
rm -rf "$OV"
say "writing the initrd"
cat "$CACHE/base.cpio" "$CACHE/overlay.cpio" >"$CACHE/initrd.tmp"
mv "$CACHE/initrd.tmp" "$CACHE/initrd"
cp "$KDIR/boot/vmlinuz-$KVER" "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
printf 'KVER=%s\nKPKG_VERSION=%s\nSUITE=%s\n' "$KVER" "$KPKG_VERSION" "$SUITE" >"$CACHE/host.env"
echo "$STAMP" >"$CACHE/stamp"
say "built: kernel $KVER ($KPKG_VERSION), initrd $(du -m "$CACHE/initrd" | cut -f1) MiB"
