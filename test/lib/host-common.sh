# shellcheck shell=bash
# Shell functions shared by the scripts of the two nested test hosts, which source this file:
# test/nested/build-host.sh and test/nested/run.sh (the nested KVM host), test/xen/build-host.sh
# and test/xen/run.sh (the nested Xen host). Sourcing it only defines functions; they read and set
# the globals their comments name (CACHE everywhere; RUN, REPO, TIMEOUT, NINEP_CACHE in run.sh).
# Each script calls log_as first.
#
# A build-host.sh hashes itself and this file into the stamp its initrd is keyed by, so a change
# here costs a repack of the initrd. Its other cache keys (the root filesystem's: slow to redo)
# hash the text of its own functions (`declare -f build_rootfs`, ...), which therefore stay in the
# script, and values: SUITE and MIRROR come from here (debian_suite, find_mirror), and must not
# change with an edit of this file.

# ---------------------------------------------------------------------------------------------
# Both kinds of script.

# log_as PREFIX STATUS [START]: say and die print "PREFIX: ..." on stderr; die exits with STATUS
# unless told otherwise. With START (a `date +%s.%N`), say's lines give the seconds since then.
log_as() {
  LOG_PREFIX=$1 LOG_STATUS=$2 LOG_START=${3:-}
}

# say MESSAGE...: a progress line.
say() {
  if [ -n "$LOG_START" ]; then
    printf '%s: [%5.1fs] %s\n' "$LOG_PREFIX" "$(awk -v s="$LOG_START" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')" "$*" >&2
  else
    printf '%s: %s\n' "$LOG_PREFIX" "$*" >&2
  fi
}

# die MESSAGE [STATUS]: an error line, and exit.
die() {
  printf '%s: error: %s\n' "$LOG_PREFIX" "$1" >&2
  exit "${2:-$LOG_STATUS}"
}

# since START: the seconds since START (a `date +%s.%N`), to a tenth.
since() {
  awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'
}

# ---------------------------------------------------------------------------------------------
# build-host.sh: the host's packages and the initrd.

# build_start WHAT: root on x86_64 or die; umask 022; $CACHE made; then this process holds
# $CACHE/build.lock on descriptor 9 (run.sh may be called concurrently), after waiting for
# another build of WHAT ("the nested host") if one holds it.
build_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and builds a root filesystem)"
  [ "$(uname -m)" = x86_64 ] || die "needs an x86_64 host"
  umask 022
  mkdir -p "$CACHE"
  chmod 0755 "$CACHE"
  exec 9>"$CACHE/build.lock"
  if ! flock -n 9; then
    say "waiting for another build of $1"
    flock 9
  fi
}

# apt_update: `apt-get update`, once per shell (apt_updated=1 after it).
apt_update() {
  [ "${apt_updated:-0}" = 1 ] && return 0
  say "apt-get update"
  apt-get -o DPkg::Lock::Timeout=900 update -qq >&2
  apt_updated=1
}

# install_missing CHECK:PACKAGE...: installs, in one apt-get call, each PACKAGE whose CHECK fails:
# a command name (on PATH) or, starting with /, a file.
install_missing() {
  local item check need=()
  for item; do
    check=${item%%:*}
    case "$check" in
      /*) [ -f "$check" ] && continue ;;
      *) command -v "$check" >/dev/null && continue ;;
    esac
    need+=("${item#*:}")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt_update
    say "installing ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >&2
  fi
}

# apt_download DIR APT_GET_OPTION... PKG=VERSION: `apt-get download` into DIR; when that fails,
# apt_update and once more.
apt_download() {
  local dir=$1
  shift
  if ! (cd "$dir" && apt-get download "$@" >&2 2>/dev/null); then
    apt_update
    (cd "$dir" && apt-get download "$@" >&2)
  fi
}

# debootstrap_minbase PACKAGES DIR: a minimal Debian $SUITE from $MIRROR with PACKAGES (comma-
# separated) in DIR, or die with the tail of its log. A build_rootfs calls it; its root filesystem
# key hashes this function's text too (`declare -f build_rootfs debootstrap_minbase`).
debootstrap_minbase() {
  if ! debootstrap --variant=minbase --components=main --include="$1" \
      --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$SUITE" "$2" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $CACHE/debootstrap.log)"
  fi
}

# debian_suite WHAT: SUITE, this host's Debian release (from /etc/os-release, whose variables it
# sets); dies when the host is not Debian, WHAT ("the nested host") being built from its archive.
debian_suite() {
  # shellcheck source=/dev/null
  . /etc/os-release
  [ "${ID:-}" = debian ] || die "this host is ${ID:-unknown}; $1 is built from Debian's archive"
  SUITE=${VERSION_CODENAME:-}
  [ -n "$SUITE" ] || die "/etc/os-release has no VERSION_CODENAME"
}

# find_mirror SUITE: the Debian mirror this host's apt uses for SUITE itself (not -security or
# -updates); deb.debian.org when none names it.
find_mirror() {
  local f uri
  # deb822 .sources: the stanza whose Suites names the release itself.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk -v suite="$1" '
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
    uri=$(awk -v suite="$1" '$1 == "deb" { sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, ""); split($0, a, /[ \t]+/); if (a[2] == suite) { print a[1]; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}

# kernel_package: the linux-image-<release> package linux-image-amd64 depends on in apt's lists.
kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# find_kernel: KPKG, kernel_package (after an apt_update if apt knows none), and KVER, its release.
# shellcheck disable=SC2034 # KVER: for the script
find_kernel() {
  KPKG=$(kernel_package)
  if [ -z "$KPKG" ]; then
    apt_update
    KPKG=$(kernel_package)
  fi
  [ -n "$KPKG" ] || die "apt knows no linux-image-amd64 (check /etc/apt/sources.list*)"
  KVER=${KPKG#linux-image-}
}

# rootfs_stage KEY FILE...: unless $CACHE/rootfs.stamp holds KEY (the script's key of its root
# filesystem) and $CACHE/rootfs has a /bin/sh: the stamp and the FILEs (made from the old root
# filesystem) removed, build_rootfs (the script's own), then the stamp written.
rootfs_stage() {
  local key=$1
  shift
  if [ "$(cat "$CACHE/rootfs.stamp" 2>/dev/null)" != "$key" ] || [ ! -x "$CACHE/rootfs/bin/sh" ]; then
    rm -f "$CACHE/rootfs.stamp" "$@"
    build_rootfs
    echo "$key" >"$CACHE/rootfs.stamp"
  fi
}

# pack DIR OUT: a newc archive of DIR's contents, root-owned.
pack() {
  (cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) >"$2.tmp"
  mv "$2.tmp" "$2"
}

# initrd_current STAMP FILE...: whether $CACHE/stamp holds STAMP and each FILE of $CACHE is there.
initrd_current() {
  local f
  [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$1" ] || return 1
  shift
  for f; do
    [ -f "$CACHE/$f" ] || return 1
  done
}

# pack_base DIR WHAT: $CACHE/base.cpio, DIR (the root filesystem, WHAT in the progress line)
# packed, unless it is there already.
pack_base() {
  if [ ! -f "$CACHE/base.cpio" ]; then
    say "packing $2"
    pack "$1" "$CACHE/base.cpio"
  fi
}

# copy_modules KMOD KVER ROOT WANT: the modules WANT lists (paths relative to KMOD, a kernel's
# lib/modules/KVER; whitespace-separated) and all they depend on, copied to ROOT/usr/lib/modules/KVER
# with the module lists, and depmod'ed there (basedir ROOT/usr). modules.dep lists dependencies
# transitively; Debian's System.map is a placeholder, so `depmod -e` cannot check symbols.
copy_modules() {
  local kmod=$1 kver=$2 root=$3 want=$4 closure
  # shellcheck disable=SC2086 # the lists split on whitespace
  closure=$( (cd "$kmod" && for m in $want; do echo "$m"; grep -E "^$m:" modules.dep | cut -d: -f2 | tr ' ' '\n'; done) | grep -v '^$' | sort -u)
  # shellcheck disable=SC2086
  (cd "$kmod" && printf '%s\n' $closure | cpio -pdm --quiet "$root/usr/lib/modules/$kver")
  cp "$kmod"/modules.order "$kmod"/modules.builtin "$kmod"/modules.builtin.modinfo "$root/usr/lib/modules/$kver/" 2>/dev/null || true
  depmod -b "$root/usr" "$kver"
}

# overlay_bun BUN ROOT: BUN as ROOT/usr/local/bin/bun, and bunx.
overlay_bun() {
  cp "$1" "$2/usr/local/bin/bun"
  chmod 0755 "$2/usr/local/bin/bun"
  ln -s bun "$2/usr/local/bin/bunx"
}

# overlay_etc ROOT HOSTNAME: ROOT/etc's hostname and hosts for HOSTNAME, and an empty resolv.conf.
overlay_etc() {
  printf '%s\n' "$2" >"$1/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$2" >"$1/etc/hosts"
  : >"$1/etc/resolv.conf"
}

# finish_build OV VMLINUZ STAMP VAR...: the end of a build. OV, the overlay, packed (its /init
# made executable) as $CACHE/overlay.cpio and removed; $CACHE/initrd made of base.cpio +
# overlay.cpio (the kernel unpacks concatenated archives in order); VMLINUZ copied to
# $CACHE/vmlinuz; $CACHE/host.env, VAR=value lines for run.sh; last, STAMP in $CACHE/stamp.
finish_build() {
  local ov=$1 vmlinuz=$2 stamp=$3 var
  shift 3
  chmod 0755 "$ov/init"
  pack "$ov" "$CACHE/overlay.cpio"
  rm -rf "$ov"
  say "writing the initrd"
  cat "$CACHE/base.cpio" "$CACHE/overlay.cpio" >"$CACHE/initrd.tmp"
  mv "$CACHE/initrd.tmp" "$CACHE/initrd"
  cp "$vmlinuz" "$CACHE/vmlinuz.tmp" && mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
  for var; do printf '%s=%s\n' "$var" "${!var}"; done >"$CACHE/host.env"
  echo "$stamp" >"$CACHE/stamp"
}

# Pieces of the guest's /init (bash, run as the kernel's first process), printed for the script
# that writes it. init_mounts: /proc, /sys, /dev (devtmpfs, devpts, /dev/shm), /tmp and /run.
init_mounts() {
  cat <<'INIT'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
INIT
}

# init_fail: fail STAGE MESSAGE, logged and (once $ctl_mounted is 1) written to $CTL/error, then
# the script's own finish (what it writes back, power off).
init_fail() {
  cat <<'INIT'
fail() { # fail STAGE MESSAGE
  log "FAILED at $1: $2"
  [ "$ctl_mounted" = 1 ] && printf '%s: %s\n' "$1" "$2" >"$CTL/error"
  finish
}
INIT
}

# init_repo_share: the repository's 9p share mounted at its host path, in the cache mode run.sh
# left in the control share ($CTL: cache, repo).
init_repo_share() {
  cat <<'INIT'
cache=$(cat "$CTL/cache" 2>/dev/null || echo loose)
repo=$(cat "$CTL/repo")
mkdir -p "$repo"
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,cache=$cache,access=client" repo "$repo" || fail mount "cannot mount the repository at $repo"
INIT
}

# init_command: the command run.sh left in $CTL (argv, env: NUL-separated; cwd) read into argv,
# envv and cwd; $CTL/booted written (the uptime); into cwd.
init_command() {
  cat <<'INIT'
mapfile -d '' -t argv <"$CTL/argv"
mapfile -d '' -t envv <"$CTL/env"
cwd=$(cat "$CTL/cwd")
uptime_s >"$CTL/booted"
log "running ${argv[*]} in $cwd at $(uptime_s)s"
cd "$cwd" || fail cwd "cannot enter $cwd"
INIT
}

# init_status: $status, the command's, logged and written to $CTL/status; then finish.
init_status() {
  cat <<'INIT'
log "exit status $status at $(uptime_s)s"
echo "$status" >"$CTL/status"
finish
INIT
}

# ---------------------------------------------------------------------------------------------
# run.sh: one VM's run.

# take_command VAR_PREFIX [--] COMMAND [ARGS...]: CMD, the command; dies (2) without one, or when
# TIMEOUT is not a number of seconds (VAR_PREFIX_TIMEOUT). `bun test` without --timeout gets
# --timeout VAR_PREFIX_TEST_TIMEOUT (ms, default 600000): bun's 5 s per test is far too short under
# TCG, where a VM test runs 10-50 times slower than on KVM.
# shellcheck disable=SC2034 # CMD: for the script
take_command() {
  local prefix=$1 arg has_timeout=0
  local test_timeout=${prefix}_TEST_TIMEOUT
  shift
  [ "${1:-}" = -- ] && shift
  [ $# -gt 0 ] || die "usage: $0 -- COMMAND [ARGS...]" 2
  [[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "${prefix}_TIMEOUT must be a number of seconds, got '$TIMEOUT'" 2
  CMD=("$@")
  if [ "$(basename -- "$1")" = bun ] && [ "${2:-}" = test ]; then
    for arg in "$@"; do case "$arg" in --timeout | --timeout=*) has_timeout=1 ;; esac; done
    [ "$has_timeout" = 1 ] || CMD=("$1" test --timeout "${!test_timeout:-600000}" "${@:3}")
  fi
  return 0
}

# qemu_lock FILE WHAT: this process holds FILE (a lock) on descriptor 8, after waiting for another
# WHAT VM ("nested") to finish if one holds it.
qemu_lock() {
  exec 8>"$1"
  if ! flock -n 8; then
    say "waiting for another $2 VM to finish"
    flock 8
  fi
}

# start_run: RUN, a new run directory under $CACHE/runs; then the traps: cleanup (the script's
# own) on exit, exit 130 on SIGINT, 143 on SIGTERM.
start_run() {
  mkdir -p "$CACHE/runs"
  RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# write_command GUEST_PATH VAR_PREFIX [NAME=VALUE...] -- COMMAND [ARGS...]: what the guest's /init
# runs, in $RUN: argv (COMMAND ARGS, NUL-separated), env (NUL-separated: PATH=GUEST_PATH,
# HOME=/root, the NAME=VALUEs, CI, TERM=dumb, LANG=C.UTF-8, then this environment's SNOWFLOCK_*,
# NO_COLOR and FORCE_COLOR, less VAR_PREFIX_* and the NAMEs given), cwd (this directory when it
# is inside $REPO, else $REPO), repo ($REPO) and cache ($NINEP_CACHE: the repository share's 9p
# cache mode).
write_command() {
  local path=$1 prefix=$2 fixed=() kv f cwd
  shift 2
  while [ "$1" != -- ]; do
    fixed+=("$1")
    shift
  done
  shift
  printf '%s\0' "$@" >"$RUN/argv"
  {
    printf '%s\0' "PATH=$path" "HOME=/root" "${fixed[@]}" "CI=${CI:-}" "TERM=dumb" "LANG=C.UTF-8"
    while IFS= read -r -d '' kv; do
      case "$kv" in
        "$prefix"_*) continue ;;
        SNOWFLOCK_* | NO_COLOR=* | FORCE_COLOR=*) ;;
        *) continue ;;
      esac
      for f in "${fixed[@]}"; do
        [ "${kv%%=*}" = "${f%%=*}" ] && continue 2
      done
      printf '%s\0' "$kv"
    done < <(env -0)
  } >"$RUN/env"
  cwd=$(pwd -P)
  case "$cwd/" in "$REPO"/*) ;; *) cwd=$REPO ;; esac
  printf '%s' "$cwd" >"$RUN/cwd"
  printf '%s' "$REPO" >"$RUN/repo"
  printf '%s' "$NINEP_CACHE" >"$RUN/cache"
}

# run_qemu QEMU_ARGS...: qemu-system-x86_64 QEMU_ARGS with $RUN and $REPO shared over virtio-9p
# (tags ctl and repo), under `timeout -k 10 $TIMEOUT`, stdin /dev/null, stderr to $RUN/qemu.stderr;
# its exit status in rc (124 or 137: the time ran out). qemu_pid is its process while it runs
# (`timeout`'s, which passes a SIGTERM on to QEMU), also in $RUN/qemu.pid. QEMU_WRAP, an array
# (may be unset), goes between timeout and QEMU (`ip netns exec NS`).
run_qemu() {
  set +e
  timeout -k 10 "$TIMEOUT" ${QEMU_WRAP[@]+"${QEMU_WRAP[@]}"} qemu-system-x86_64 "$@" \
    -fsdev "local,id=ctl,path=$RUN,security_model=passthrough" -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl \
    -fsdev "local,id=repo,path=$REPO,security_model=passthrough,multidevs=remap" -device virtio-9p-pci,fsdev=repo,mount_tag=repo \
    </dev/null 2>"$RUN/qemu.stderr" &
  qemu_pid=$!
  echo "$qemu_pid" >"$RUN/qemu.pid"
  wait "$qemu_pid"
  rc=$?
  qemu_pid=
  set -e
}

# show_console TITLE LINES: what QEMU said on stderr, then TITLE and the last LINES lines of the
# serial console ($RUN/console.log).
show_console() {
  if [ -s "$RUN/qemu.stderr" ]; then say "qemu said:"; sed 's/^/  /' "$RUN/qemu.stderr" >&2; fi
  say "$1"
  tail -n "$2" "$RUN/console.log" 2>/dev/null | tr -d '\r' | sed 's/^/  /' >&2
}

# vm_exit RC WALL DONE TIMEOUT_VAR CONSOLE_TITLE CONSOLE_LINES ERROR_TAG NO_SUPPORT HOST: exits as
# the VM's run came out, QEMU having ended with RC after WALL seconds. The command's exit status
# (/init wrote $RUN/status) after "DONE: exit status N". Else show_console CONSOLE_TITLE
# CONSOLE_LINES and die: 124 when `timeout` ended QEMU (TIMEOUT_VAR ran out, even if the command
# had finished); 126 when /init failed at its stage ERROR_TAG ("NO_SUPPORT: reason"); 125 when
# /init failed otherwise ("HOST failed: ...") or the VM ended before the command did.
vm_exit() {
  local rc=$1 wall=$2 status
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    show_console "$5" "$6"
    die "timed out after ${TIMEOUT}s ($4)" 124
  fi
  if [ -f "$RUN/status" ]; then
    status=$(cat "$RUN/status")
    say "$3: exit status $status"
    exit "$status"
  fi
  show_console "$5" "$6"
  if [ -f "$RUN/error" ]; then
    case "$(cat "$RUN/error")" in
      "$7":*) die "$8: $(cut -d' ' -f2- "$RUN/error")" 126 ;;
      *) die "$9 failed: $(cat "$RUN/error")" ;;
    esac
  fi
  if [ -f "$RUN/booted" ]; then
    die "the VM ended (qemu exit status $rc) while the command was running, after ${wall}s"
  fi
  die "the VM ended (qemu exit status $rc) before it could run the command: it did not boot"
}
