#!/usr/bin/env bash
# Runs a command in the dom0 of a nested Xen host: Xen 4.17 and a Debian dom0 under QEMU's software
# emulator (TCG), built by test/xen/build-host.sh.
#
#   bash test/xen/run.sh -- bun test test/xen/
#   bash test/xen/run.sh -- ./dist/snowflock-baseline doctor
#
# QEMU loads the uncompressed Xen with -kernel (it boots it through Xen's multiboot header), the
# dom0 kernel with its command line and the initramfs as -initrd modules. The CPU is
# `qemu64,+svm,+npt` (AMD-V with nested paging: PVH/HVM domUs need HAP, Debian's Xen has no shadow
# paging; `-cpu max` does not boot Xen here) plus the x86-64-v2 features Bun's baseline build
# needs (without SSE4.2/POPCNT it dies of SIGILL). dom0 starts xenstored, xen-init-dom0 and
# xenconsoled, then runs the command as root with the repository shared (virtio-9p) at the same
# absolute path, in the same subdirectory if run.sh is called from inside the repository. The
# environment: PATH (Xen's tools, then bun — the baseline build — in /usr/local/bin), HOME, CI,
# SNOWFLOCK_XEN_DOMU_DIR (the test domU: vmlinuz, initrd.gz, pvh.cfg), and the caller's
# SNOWFLOCK_* variables except SNOWFLOCK_XEN_* ones. Its stdout and stderr (merged) stream to this
# stdout (through a file in the 9p control share); run.sh exits with its exit status. run.sh's own
# lines go to stderr, prefixed "xen:". Failures of the host itself: 124 when SNOWFLOCK_XEN_TIMEOUT
# ran out, 126 when dom0 came up without Xen (no privcmd, no toolstack), 125 when it did not boot
# (or QEMU ended while the command ran); with the reason and the tail of the serial console.
#
# Environment:
#   SNOWFLOCK_XEN_HYPERVISOR  stock (Debian's binary; the default) or paging (bookworm's Xen source built
#                           with memory paging; the command then gets SNOWFLOCK_REQUIRE_PAGING=1, so
#                           tests that need paging fail instead of skipping)
#   SNOWFLOCK_XEN_TIMEOUT   seconds for the whole VM, boot included (default 900)
#   SNOWFLOCK_XEN_CACHE     where build-host.sh keeps the host (default /var/cache/snowflock/xen)
#   SNOWFLOCK_XEN_MEM       QEMU memory (default 4G); SNOWFLOCK_XEN_DOM0_MEM dom0's share (default 1536M)
#   SNOWFLOCK_XEN_SMP       vCPUs (default 2; at least 2: the test domUs are pinned to pCPU 1)
#   SNOWFLOCK_XEN_CPU       QEMU -cpu (default qemu64,+svm,+npt,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16)
#   SNOWFLOCK_XEN_9P_CACHE  9p cache mode of the repository share (default loose)
#   SNOWFLOCK_XEN_TEST_TIMEOUT  per-test timeout (ms) added to `bun test` without --timeout (default 600000)
#   SNOWFLOCK_XEN_KEEP=1    keep the run directory under $CACHE/runs also when the command passed
#                           (a failed run's is always kept, the last 5): the serial console (Xen at
#                           loglvl=all, dom0), QEMU's log of CPU resets and guest errors, and dom0's
#                           dmesg, xl dmesg and /var/log/xen (guest consoles) when it got that far
#
# One VM at a time per cache dir: a second run.sh waits for the first. What this script shares with
# test/nested/run.sh is in test/lib/host-common.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO=$(cd "$HERE/../.." && pwd -P)
CACHE=${SNOWFLOCK_XEN_CACHE:-/var/cache/snowflock/xen}
TIMEOUT=${SNOWFLOCK_XEN_TIMEOUT:-900}
MEM=${SNOWFLOCK_XEN_MEM:-4G}
DOM0_MEM=${SNOWFLOCK_XEN_DOM0_MEM:-1536M}
SMP=${SNOWFLOCK_XEN_SMP:-2}
CPU=${SNOWFLOCK_XEN_CPU:-qemu64,+svm,+npt,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16}
NINEP_CACHE=${SNOWFLOCK_XEN_9P_CACHE:-loose}
T0=$(date +%s.%N)
# The test domUs are pinned to pCPU 1 (build-host.sh's pvh.cfg says why).
[ "$SMP" -ge 2 ] 2>/dev/null || { echo "xen: SNOWFLOCK_XEN_SMP must be 2 or more (the test domUs run on pCPU 1)" >&2; exit 125; }
# shellcheck source=SCRIPTDIR/../lib/host-common.sh
. "$HERE/../lib/host-common.sh"
log_as xen 125

# The command (`bun test` without --timeout gets SNOWFLOCK_XEN_TEST_TIMEOUT ms).
HYPERVISOR=${SNOWFLOCK_XEN_HYPERVISOR:-stock}
case "$HYPERVISOR" in
  stock) XEN_IMAGE=$CACHE/xen ;;
  paging) XEN_IMAGE=$CACHE/xen-paging && export SNOWFLOCK_REQUIRE_PAGING=1 ;;
  *) die "SNOWFLOCK_XEN_HYPERVISOR must be stock or paging, not '$HYPERVISOR'" ;;
esac
take_command SNOWFLOCK_XEN "$@"
set -- "${CMD[@]}"

bash "$HERE/build-host.sh" </dev/null || die "building the Xen host failed"
say "host ready in $(since "$T0")s"
. "$CACHE/host.env"

qemu_lock "$CACHE/qemu.lock" Xen

qemu_pid= watch_pid= tail_pid=
# shellcheck disable=SC2317 # the EXIT trap's
cleanup() {
  local rc=$?
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
  # A failed run's directory stays for a look (the last 5 of them); a passed one goes.
  if [ "${SNOWFLOCK_XEN_KEEP:-}" = 1 ] || [ "$rc" != 0 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
  ls -dt "$CACHE"/runs/run.* 2>/dev/null | tail -n +6 | xargs -r rm -rf || true
}
start_run

# The command, its environment and directory, for dom0's /init.
write_command /usr/lib/xen-4.17/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin SNOWFLOCK_XEN -- "$@"

say "booting Xen $XEN_VERSION ($HYPERVISOR) + dom0 $KVER (QEMU TCG, -cpu $CPU, $SMP vCPUs, $MEM, dom0 $DOM0_MEM; timeout ${TIMEOUT}s) for: $*"
start=$(date +%s.%N)
# The command's output: dom0 appends it to $RUN/output (9p, uncached: every write reaches this
# file at once), streamed from here to stdout. The serial port (Xen's console, dom0's hvc0
# behind it) goes to a log file, shown when something fails.
: >"$RUN/output"
tail -n +1 -f "$RUN/output" &
tail_pid=$!
# The moment dom0 reaches the command (it writes $RUN/booted), for the boot time.
( while [ ! -s "$RUN/booted" ]; do sleep 0.5; done
  say "dom0 up, running the command: $(since "$start")s after QEMU started (dom0 uptime $(cat "$RUN/booted")s)" ) &
watch_pid=$!
run_qemu \
  -accel tcg -cpu "$CPU" -smp "$SMP" -m "$MEM" \
  -display none -monitor none -no-reboot -nic none -nodefaults -d cpu_reset,guest_errors -D "$RUN/qemu.log" \
  -serial "file:$RUN/console.log" \
  -kernel "$XEN_IMAGE" \
  -append "console=com1 com1=115200 dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=$SMP noreboot loglvl=all guest_loglvl=all" \
  -initrd "$CACHE/vmlinuz console=hvc0 earlyprintk=xen loglevel=4,$CACHE/initrd"
kill "$watch_pid" 2>/dev/null || true
watch_pid=
# tail -f polls once a second: let it print what is left, then stop it.
sleep 1.2
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=
wall=$(since "$start")

vm_exit "$rc" "$wall" \
  "done in $(since "$T0")s (QEMU ${wall}s; dom0 reached the command after $(cat "$RUN/booted" 2>/dev/null || echo ?)s of uptime)" \
  SNOWFLOCK_XEN_TIMEOUT "last lines of the serial console (Xen, dom0):" 30 xen "dom0 has no working Xen" "the Xen host"
