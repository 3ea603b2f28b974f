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
#   SNOWFLOCK_XEN_HOSTS     Xen hosts (default 1; at most 4). With more, each is its own QEMU and
#                           all share one private L2 segment: a bridge in a network namespace of
#                           the run (sfxen-PID), each QEMU's virtio-net NIC a tap on it, nothing
#                           else on it. In host I's dom0 the NIC joins bridge sfbr0, which has
#                           10.77.0.(10+I)/24 and MAC 02:73:66:00:00:0I and MTU 9000 (the
#                           addressing and jumbo frames of `cluster up`'s test hosts, where
#                           mcdist sends two pages to a frame); a cluster inventory (cluster "xen", hosts
#                           h1..hN, agents on port 7070, a fresh secret) is at
#                           $SNOWFLOCK_XEN_CLUSTER in every dom0. Hosts 2..N run
#                           `snowflock agent --backend xen --host hI` (test/xen/member-host.sh,
#                           output prefixed "hI| "), host 1 the command with SNOWFLOCK_XEN_HOST=h1;
#                           once it ended the others stop, and the namespace goes, whatever happened.
#                           Host 1's command may ask for faults: it writes one line into
#                           $SNOWFLOCK_XEN_CONTROL/fault and waits for fault.done (its result):
#                             stop-agent hI   kill host I's agent (SIGKILL; its host runs on)
#                             link faulty     on the segment, drop 2% of frames and duplicate 5% of
#                                             host 1's frames to each other host (nftables)
#                             link clear      undo that; the result says how many frames were dropped
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
HOSTS=${SNOWFLOCK_XEN_HOSTS:-1}
[[ "$HOSTS" =~ ^[1-4]$ ]] || { echo "xen: SNOWFLOCK_XEN_HOSTS must be 1 to 4, not '$HOSTS'" >&2; exit 125; }
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

qemu_pid= watch_pid= tail_pid= fault_pid= NETNS= MEMBER_RUNS=() MEMBER_PIDS=() MEMBER_TAILS=()
# shellcheck disable=SC2317 # the EXIT trap's
cleanup() {
  local rc=$? m
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  [ -n "$watch_pid" ] && kill "$watch_pid" 2>/dev/null || true
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null || true
  [ -n "$fault_pid" ] && kill "$fault_pid" 2>/dev/null || true
  stop_members
  [ -n "$NETNS" ] && { ip netns del "$NETNS" 2>/dev/null || true; }
  for m in ${MEMBER_RUNS[@]+"${MEMBER_RUNS[@]}"}; do
    if [ "${SNOWFLOCK_XEN_KEEP:-}" = 1 ] || [ "$rc" != 0 ]; then mv "$m" "$RUN/" 2>/dev/null || true; else rm -rf "$m"; fi
  done
  # A failed run's directory stays for a look (the last 5 of them); a passed one goes.
  if [ "${SNOWFLOCK_XEN_KEEP:-}" = 1 ] || [ "$rc" != 0 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
  ls -dt "$CACHE"/runs/run.* 2>/dev/null | tail -n +6 | xargs -r rm -rf || true
}

# Hosts 2..N of a multi-host run, once host 1's command has ended: each agent is asked to stop
# (member-host.sh waits for the stop file), its dom0 to power off; any QEMU still there after
# 60 s is ended. Idempotent.
# shellcheck disable=SC2317 # the EXIT trap's too
stop_members() {
  local m pid i alive
  [ ${#MEMBER_RUNS[@]} -gt 0 ] || return 0
  for m in "${MEMBER_RUNS[@]}"; do touch "$m/stop" 2>/dev/null || true; done
  for i in $(seq 120); do
    alive=0
    for pid in ${MEMBER_PIDS[@]+"${MEMBER_PIDS[@]}"}; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.5
  done
  for m in "${MEMBER_RUNS[@]}"; do [ -s "$m/qemu.pid" ] && { kill "$(cat "$m/qemu.pid")" 2>/dev/null || true; }; done
  sleep 1.2 # the last lines of their output
  for pid in ${MEMBER_TAILS[@]+"${MEMBER_TAILS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  MEMBER_PIDS=() MEMBER_TAILS=()
  return 0
}
start_run

GUEST_PATH=/usr/lib/xen-4.17/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
CONTROL=/run/xenhost # where dom0's /init mounts the control share
NIC=()
if [ "$HOSTS" -gt 1 ]; then
  # The hosts' private segment, and the inventory every dom0 reads.
  NETNS=sfxen-$$
  # Jumbo frames like `cluster up`'s test hosts (TEST_HOST_MTU): a page and its neighbour go in one
  # mcdist frame, not three frames a page, which under emulation is what a copy across hosts costs.
  MTU=9000
  ip netns add "$NETNS" || die "cannot create network namespace $NETNS (ip netns needs root)"
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" link add sfxbr0 mtu "$MTU" type bridge && ip -n "$NETNS" link set sfxbr0 up || die "cannot create the hosts' bridge in $NETNS"
  QEMU_WRAP=(ip netns exec "$NETNS")
  secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  hosts_json=
  for i in $(seq "$HOSTS"); do
    hosts_json+="${hosts_json:+,}{\"name\":\"h$i\",\"namespace\":null,\"address\":\"10.77.0.$((10 + i))\",\"interface\":\"sfbr0\",\"mac\":\"02:73:66:00:00:0$i\",\"agentPort\":7070}"
    ip -n "$NETNS" tuntap add dev "tap$i" mode tap && ip -n "$NETNS" link set "tap$i" mtu "$MTU" master sfxbr0 up ||
      die "cannot create tap$i in $NETNS"
  done
  inventory="{\"version\":1,\"cluster\":\"xen\",\"secret\":\"$secret\",\"bridge\":null,\"mtu\":$MTU,\"hosts\":[$hosts_json]}"
  # host I's network line for /init, its inventory copy (mode 0600: it holds the secret), its NIC.
  host_files() {
    echo "10.77.0.$((10 + $1))/24 02:73:66:00:00:0$1 $MTU" >"$2/network"
    (umask 077 && echo "$inventory" >"$2/cluster.json")
  }
  nic() { NIC=(-netdev "tap,id=cluster,ifname=tap$1,script=no,downscript=no" -device "virtio-net-pci,netdev=cluster,mac=02:73:66:00:00:0$1"); }
  for i in $(seq 2 "$HOSTS"); do
    member=$(mktemp -d "$CACHE/runs/h$i.XXXXXX")
    MEMBER_RUNS+=("$member")
    host_files "$i" "$member"
    ( RUN=$member
      write_command "$GUEST_PATH" SNOWFLOCK_XEN SNOWFLOCK_XEN_CLUSTER=$CONTROL/cluster.json SNOWFLOCK_XEN_HOST=h$i \
        SNOWFLOCK_XEN_CONTROL=$CONTROL -- bash "$HERE/member-host.sh" ) </dev/null
    : >"$member/output"
    tail -n +1 -f "$member/output" > >(sed -u "s/^/h$i| /" 8>&-) 2>/dev/null 8>&- &
    MEMBER_TAILS+=($!)
  done
  host_files 1 "$RUN"
  nic 1
  # Faults host 1's command asks for (see the header), carried out here, outside the hosts.
  fault() {
    local verb=$1 what=${2:-} i taps=()
    case "$verb $what" in
      "stop-agent h"[2-9])
        i=${what#h}
        [ "$i" -le "$HOSTS" ] || { echo "error no host $what"; return; }
        touch "${MEMBER_RUNS[$((i - 2))]}/stop-agent" && echo ok ;;
      "link faulty")
        for i in $(seq 2 "$HOSTS"); do taps+=("numgen random mod 20 0 dup to \"tap$i\";"); done
        ip netns exec "$NETNS" nft -f - <<NFT && echo ok || echo "error nft refused the rules"
table bridge sfxloss { chain forward { type filter hook forward priority 0; numgen random mod 50 0 counter drop; }; }
table netdev sfxdup { chain ingress { type filter hook ingress device "tap1" priority 0; ${taps[*]} }; }
NFT
        ;;
      "link clear")
        i=$(ip netns exec "$NETNS" nft list table bridge sfxloss 2>/dev/null | sed -n 's/.*packets \([0-9]*\).*/\1/p' | head -n 1)
        ip netns exec "$NETNS" nft delete table bridge sfxloss 2>/dev/null
        ip netns exec "$NETNS" nft delete table netdev sfxdup 2>/dev/null
        echo "ok dropped ${i:-0}" ;;
      *) echo "error unknown fault '$verb $what'" ;;
    esac
  }
  ( while :; do
      if [ -s "$RUN/fault" ]; then
        read -r verb what <"$RUN/fault" || true
        rm -f "$RUN/fault"
        result=$(fault "$verb" "$what" 2>&1)
        say "fault '$verb $what': $result"
        echo "$result" >"$RUN/fault.tmp" && mv "$RUN/fault.tmp" "$RUN/fault.done"
      fi
      sleep 0.5
    done ) </dev/null 8>&- &
  fault_pid=$!
fi

# The command, its environment and directory, for dom0's /init.
if [ "$HOSTS" -gt 1 ]; then
  write_command "$GUEST_PATH" SNOWFLOCK_XEN SNOWFLOCK_XEN_CLUSTER=$CONTROL/cluster.json SNOWFLOCK_XEN_HOST=h1 \
    SNOWFLOCK_XEN_CONTROL=$CONTROL -- "$@"
else
  write_command "$GUEST_PATH" SNOWFLOCK_XEN -- "$@"
fi

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
# The hosts are throwaway test machines: Xen and dom0 run without speculation mitigations (under
# emulation they only cost time). dom0 skips the kernel's crypto self-tests: under emulation on a
# busy machine one of them once spun for the whole timeout (a soft lockup in cryptomgr_test), and
# dom0 never reached the command.
QEMU_ARGS=(
  -accel tcg -cpu "$CPU" -smp "$SMP" -m "$MEM"
  -display none -monitor none -no-reboot -nic none -nodefaults -d cpu_reset,guest_errors
  -kernel "$XEN_IMAGE"
  -append "console=com1 com1=115200 dom0_mem=$DOM0_MEM,max:$DOM0_MEM dom0_max_vcpus=$SMP noreboot loglvl=all guest_loglvl=all spec-ctrl=no"
  -initrd "$CACHE/vmlinuz console=hvc0 earlyprintk=xen loglevel=4 cryptomgr.notests mitigations=off,$CACHE/initrd"
)
# Hosts 2..N boot beside host 1, each with its own run directory (console, output, status).
for i in $(seq 2 "$HOSTS"); do
  ( RUN=${MEMBER_RUNS[$((i - 2))]}
    nic "$i"
    run_qemu "${QEMU_ARGS[@]}" -D "$RUN/qemu.log" -serial "file:$RUN/console.log" "${NIC[@]}"
    echo "$rc" >"$RUN/qemu.rc" ) &
  MEMBER_PIDS+=($!)
done
run_qemu "${QEMU_ARGS[@]}" -D "$RUN/qemu.log" -serial "file:$RUN/console.log" ${NIC[@]+"${NIC[@]}"}
kill "$watch_pid" 2>/dev/null || true
watch_pid=
# The other hosts stop now; one whose agent failed fails the run (its console's tail says why).
members_failed=()
stop_members
for m in ${MEMBER_RUNS[@]+"${MEMBER_RUNS[@]}"}; do
  [ "$(cat "$m/status" 2>/dev/null)" = 0 ] && continue
  name=$(basename "$m" | cut -d. -f1)
  members_failed+=("$name")
  say "host $name: its agent ended with status $(cat "$m/status" 2>/dev/null || echo '?') $(cat "$m/error" 2>/dev/null || true); last lines of its console:"
  tail -n 15 "$m/console.log" 2>/dev/null | tr -d '\r' | sed 's/^/  /' >&2
done
# tail -f polls once a second: let it print what is left, then stop it.
sleep 1.2
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=
wall=$(since "$start")

if [ ${#members_failed[@]} -gt 0 ] && [ "$(cat "$RUN/status" 2>/dev/null)" = 0 ]; then
  die "the command passed, but host(s) ${members_failed[*]} failed (see above)" 1
fi
vm_exit "$rc" "$wall" \
  "done in $(since "$T0")s (QEMU ${wall}s; dom0 reached the command after $(cat "$RUN/booted" 2>/dev/null || echo ?)s of uptime)" \
  SNOWFLOCK_XEN_TIMEOUT "last lines of the serial console (Xen, dom0):" 30 xen "dom0 has no working Xen" "the Xen host"
