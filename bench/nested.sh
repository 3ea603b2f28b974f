#!/usr/bin/env bash
# The fork table of the README, by one command on a machine without /dev/kvm: builds snowflock,
# boots the nested KVM host with QEMU inside it (a cache of its own) and runs `snowflock bench fork`
# there (1 GiB built-in guest, N = 1..32, both memory paths, 5 runs, a pool of 32 ready VMMs, QEMU
# beside it). Results: bench/results/nested-fork/fork.{json,svg}; the figure is copied to
# docs/fork-nested.svg. Arguments, if any, replace the N, memory and runs (e.g. --runs 1 --clones 1,4).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x dist/snowflock ] && [ -z "$(find src -newer dist/snowflock -name '*.ts' | head -1)" ] || bun run build
out=bench/results/nested-fork
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--clones 1,2,4,8,16,32 --memory cow,ondemand --runs 5)
mkdir -p "$out" docs
SNOWFLOCK_NESTED_CACHE=${SNOWFLOCK_NESTED_CACHE:-/var/cache/snowflock/nested-qemu} \
SNOWFLOCK_NESTED_EXTRA_PACKAGES=qemu-system-x86 \
SNOWFLOCK_NESTED_SLOT=${SNOWFLOCK_NESTED_SLOT:-3} \
SNOWFLOCK_NESTED_MEM=${SNOWFLOCK_NESTED_MEM:-8G} \
SNOWFLOCK_NESTED_SMP=1 \
SNOWFLOCK_NESTED_TIMEOUT=${SNOWFLOCK_NESTED_TIMEOUT:-7200} \
  bash test/nested/run.sh -- env SNOWFLOCK_TIMEOUT_SCALE=10 dist/snowflock bench fork --out "$out" "${args[@]}"
cp "$out/fork.svg" docs/fork-nested.svg
echo "figure: docs/fork-nested.svg; table: $out/fork.json"
