#!/usr/bin/env bash
# Runs a command inside the nested KVM test host: a Debian kernel under QEMU TCG (-cpu max:
# SVM with nested paging), whose kvm-amd gives a real /dev/kvm on a machine that has none.
#
#   bash test/nested/run.sh -- bun test test/integration/run.test.ts
#
# The repository is shared into the VM (virtio-9p) at the same absolute path; the command runs
# there as root (in the same subdirectory if run.sh is called from inside the repository), with
# SNOWFLOCK_REQUIRE_KVM=1, CI=$CI, the host's bun on PATH, and any SNOWFLOCK_* variables of the
# caller except SNOWFLOCK_NESTED_*. Its stdout and stderr (merged) stream to this stdout through
# a virtio console; run.sh exits with its exit status. run.sh's own lines go to stderr, prefixed
# "nested:". When the VM fails to boot, /dev/kvm does not appear, or the time runs out, it exits
# non-zero (125, 126 and 124) with the reason and the tail of the VM's console log.
#
# Environment:
#   SNOWFLOCK_NESTED_TIMEOUT  seconds for the whole VM, boot included (default 3000)
#   SNOWFLOCK_NESTED_CACHE    where build-host.sh keeps the host (default /var/cache/snowflock/nested)
#   SNOWFLOCK_NESTED_MEM      guest memory (default 12G); SNOWFLOCK_NESTED_SMP vCPUs (default 2)
#   SNOWFLOCK_NESTED_CPU      QEMU -cpu model (default max: Bun needs AVX2, KVM needs svm)
#   SNOWFLOCK_NESTED_ACCEL    QEMU -accel (default tcg,thread=single: with multi-threaded TCG
#                             the guest kernel now and then wedges for good, both vCPUs looping
#                             on a stale int3 left by kernel code patching; single is no slower here)
#   SNOWFLOCK_NESTED_9P_CACHE 9p cache mode for the repository share (default loose: the guest
#                             does not see the host's changes made during the run)
#   SNOWFLOCK_NESTED_TEST_TIMEOUT  per-test timeout (ms) added to `bun test` when the command has
#                             no --timeout of its own (default 600000)
#   SNOWFLOCK_NESTED_KEEP=1   keep the run directory (console log, dmesg) under $CACHE/runs
#   SNOWFLOCK_NESTED_SLOT     which of the VMs that may run at once this is (default 0; see below)
#   SNOWFLOCK_NESTED_DEBUG=1  also a root shell inside the VM and QEMU's monitor, on unix sockets
#                             (printed; for hangs), and keep the run directory
#   SNOWFLOCK_NESTED_LOGLEVEL kernel console loglevel in the VM's console log (default 4)
#
# One VM at a time per cache dir and slot: a second run.sh in the same slot waits for the first.
# `bun run test` runs two, in slots 0 and 1 (each emulator keeps one core busy).
# (Edit this file by writing a new one and renaming it over: bash reads a running script as it
# goes, and others may be running it.) What it shares with test/xen/run.sh is in
# test/lib/host-common.sh, which it reads whole when it starts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
CACHE=${SNOWFLOCK_NESTED_CACHE:-/var/cache/snowflock/nested}
TIMEOUT=${SNOWFLOCK_NESTED_TIMEOUT:-3000}
MEM=${SNOWFLOCK_NESTED_MEM:-12G}
SMP=${SNOWFLOCK_NESTED_SMP:-2}
NINEP_CACHE=${SNOWFLOCK_NESTED_9P_CACHE:-loose}
# shellcheck source=SCRIPTDIR/../lib/host-common.sh
. "$HERE/../lib/host-common.sh"
log_as nested 125

# The command (`bun test` without --timeout gets SNOWFLOCK_NESTED_TEST_TIMEOUT ms).
take_command SNOWFLOCK_NESTED "$@"
set -- "${CMD[@]}"

bash "$HERE/build-host.sh" </dev/null || die "building the nested host failed"

# One VM at a time.
SLOT=${SNOWFLOCK_NESTED_SLOT:-0}
[[ "$SLOT" =~ ^[0-9]$ ]] || die "SNOWFLOCK_NESTED_SLOT must be a digit, got '$SLOT'" 2
if [ "$SLOT" = 0 ]; then qemu_lock "$CACHE/qemu.lock" nested; else qemu_lock "$CACHE/qemu.$SLOT.lock" nested; fi

qemu_pid=
# shellcheck disable=SC2317 # the EXIT trap's
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  if [ "${SNOWFLOCK_NESTED_KEEP:-}" = 1 ] || [ "${SNOWFLOCK_NESTED_DEBUG:-}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
start_run

# The command, its environment and directory, for /init.
write_command /usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin SNOWFLOCK_NESTED SNOWFLOCK_REQUIRE_KVM=1 -- "$@"
if [ -t 1 ]; then echo 1 >"$RUN/tty"; else echo 0 >"$RUN/tty"; fi
debug=() monitor=(-monitor none)
if [ "${SNOWFLOCK_NESTED_DEBUG:-}" = 1 ]; then
  echo 1 >"$RUN/debug"
  debug=(-chardev "socket,id=dbg,path=$RUN/debug.sock,server=on,wait=off" -device virtserialport,chardev=dbg,name=debug)
  monitor=(-monitor "unix:$RUN/monitor.sock,server=on,wait=off")
  say "debug shell in the VM once it runs the command: socat - UNIX-CONNECT:$RUN/debug.sock"
  say "QEMU monitor (info registers -a, ...): socat - UNIX-CONNECT:$RUN/monitor.sock"
fi

say "booting the nested KVM host (QEMU ${SNOWFLOCK_NESTED_ACCEL:-tcg,thread=single}, -cpu ${SNOWFLOCK_NESTED_CPU:-max}, $SMP vCPUs, $MEM; timeout ${TIMEOUT}s) for: $*"
start=$(date +%s.%N)
# The kernel keeps its speculation mitigations: booted with mitigations=off (a fifth off a Bun
# process start) the host froze once in CI, idle with nothing left to wake it (cause not found).
# stdout: the command's output through a virtio console (hvc0). The serial port (kernel console,
# /init's own lines) goes to a log file, shown when something fails.
run_qemu \
  -accel "${SNOWFLOCK_NESTED_ACCEL:-tcg,thread=single}" -cpu "${SNOWFLOCK_NESTED_CPU:-max}" -smp "$SMP" -m "$MEM" \
  -display none "${monitor[@]}" -no-reboot -nic none -nodefaults \
  -serial "file:$RUN/console.log" \
  -chardev stdio,id=out,signal=off -device virtio-serial-pci -device virtconsole,chardev=out \
  -device virtio-rng-pci "${debug[@]}" \
  -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd" \
  -append "console=ttyS0 quiet loglevel=${SNOWFLOCK_NESTED_LOGLEVEL:-4} panic=-1 8250.nr_uarts=1 tsc=reliable"
wall=$(since "$start")

vm_exit "$rc" "$wall" "done in ${wall}s (guest booted in $(cat "$RUN/booted" 2>/dev/null || echo ?)s)" SNOWFLOCK_NESTED_TIMEOUT \
  "last lines of the VM's console:" 25 kvm "no KVM in the nested host" "the nested host"
