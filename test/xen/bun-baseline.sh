#!/usr/bin/env bash
# Prints the path of a Bun "baseline" runtime (no AVX2 needed) of the host bun's version, fetched
# once from the npm registry (@oven/bun-linux-x64-baseline) into the Xen host's cache dir.
#
# The nested Xen host's virtual CPU has no AVX2 (Xen does not boot under QEMU's `-cpu max`), and
# Bun's ordinary x64 build needs it; the baseline build runs on any x86-64-v2 CPU. It is what runs
# `bun test` in dom0, and the runtime test/xen/build-baseline.ts embeds into dist/snowflock-baseline.
#
#   SNOWFLOCK_XEN_CACHE        cache dir (default /var/cache/snowflock/xen)
#   SNOWFLOCK_XEN_BUN_VERSION  which version (default: `bun --version` of the bun on PATH)
#
# Progress on stderr ("xen-build: ..."); only the path on stdout.
set -euo pipefail

CACHE=${SNOWFLOCK_XEN_CACHE:-/var/cache/snowflock/xen}
say() { printf 'xen-build: %s\n' "$*" >&2; }
die() { printf 'xen-build: error: %s\n' "$*" >&2; exit 1; }

VERSION=${SNOWFLOCK_XEN_BUN_VERSION:-$(bun --version 2>/dev/null)} || die "bun is not on PATH (or set SNOWFLOCK_XEN_BUN_VERSION)"
[[ "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "not a bun version: '$VERSION'"
DIR=$CACHE/bun-baseline-$VERSION
BIN=$DIR/bun

mkdir -p "$CACHE"
exec 7>"$CACHE/bun-baseline.lock"
flock 7

if [ ! -x "$BIN" ] || [ "$("$BIN" --version 2>/dev/null)" != "$VERSION" ]; then
  command -v npm >/dev/null || die "npm is needed to fetch @oven/bun-linux-x64-baseline@$VERSION"
  tmp=$(mktemp -d "$CACHE/bun-baseline.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  say "fetching @oven/bun-linux-x64-baseline@$VERSION from the npm registry"
  # npm checks the tarball against the registry's integrity hash; its own cache stays in $tmp.
  (cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "@oven/bun-linux-x64-baseline@$VERSION" >/dev/null) ||
    die "npm pack @oven/bun-linux-x64-baseline@$VERSION failed"
  tar -xzf "$tmp"/oven-bun-linux-x64-baseline-"$VERSION".tgz -C "$tmp" package/bin/bun
  # The baseline build runs on any x86-64 CPU, this one included: check that it is what we asked for.
  got=$("$tmp/package/bin/bun" --version) || die "the downloaded bun does not run"
  [ "$got" = "$VERSION" ] || die "the downloaded bun says it is $got, not $VERSION"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  install -m 0755 "$tmp/package/bin/bun" "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
  for old in "$CACHE"/bun-baseline-*; do
    [ -d "$old" ] && [ "$old" != "$DIR" ] && rm -rf "$old"
  done
  say "bun $VERSION (baseline) -> $BIN"
fi
echo "$BIN"
