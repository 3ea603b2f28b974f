#!/usr/bin/env bash
# A README benchmark table by one command on a machine without /dev/kvm: builds snowflock, boots
# the nested KVM host and runs `snowflock bench BENCHMARK` there; the report lands in
# bench/results/nested-BENCHMARK/ and its figure is copied to docs/BENCHMARK-nested.svg.
#   fork      1 GiB built-in guest, N = 1..32, both memory paths, 5 runs, a pool of 32 ready VMMs,
#             QEMU beside it (a host with QEMU inside, in a cache of its own)
#   overhead  the compute workload in cow and ondemand clones and in a clone on another test host,
#             against the VM with all memory present, 5 runs
# Arguments after BENCHMARK, if any, replace its defaults (e.g. fork --runs 1 --clones 1,4).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-}
shift || true
case "$bench" in
  fork)
    defaults=(--clones 1,2,4,8,16,32 --memory cow,ondemand --runs 5)
    export SNOWFLOCK_NESTED_CACHE=${SNOWFLOCK_NESTED_CACHE:-/var/cache/snowflock/nested-qemu}
    export SNOWFLOCK_NESTED_EXTRA_PACKAGES=qemu-system-x86
    ;;
  overhead) defaults=(--runs 5) ;;
  *)
    echo "usage: bench/nested.sh fork|overhead [bench options]" >&2
    exit 2
    ;;
esac
[ -x dist/snowflock ] && [ -z "$(find src -newer dist/snowflock -name '*.ts' | head -1)" ] || bun run build
out=bench/results/nested-$bench
args=("$@")
[ ${#args[@]} -gt 0 ] || args=("${defaults[@]}")
mkdir -p "$out" docs
SNOWFLOCK_NESTED_SLOT=${SNOWFLOCK_NESTED_SLOT:-3} \
SNOWFLOCK_NESTED_MEM=${SNOWFLOCK_NESTED_MEM:-8G} \
SNOWFLOCK_NESTED_SMP=1 \
SNOWFLOCK_NESTED_TIMEOUT=${SNOWFLOCK_NESTED_TIMEOUT:-7200} \
  bash test/nested/run.sh -- env SNOWFLOCK_TIMEOUT_SCALE=10 dist/snowflock bench "$bench" --out "$out" "${args[@]}"
cp "$out/$bench.svg" "docs/$bench-nested.svg"
echo "figure: docs/$bench-nested.svg; table: $out/$bench.json"
