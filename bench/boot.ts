/**
 * Boot latency: time from process start to the guest's first console line, for
 * `snowflock run hello` and for the same guest image booted by `qemu-system-x86_64 -accel kvm
 * -kernel` (installed from Debian's packages if missing). Median of several runs, and the ratio.
 *
 *   bun bench/boot.ts [--runs N] [--json]
 */
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { machineNote, median } from "../src/bench/machine.ts";

const root = join(import.meta.dir, "..");
const args = process.argv.slice(2);
const runs = Number(args[args.indexOf("--runs") + 1] ?? 0) || 9;
const json = args.includes("--json");
const GUEST = join(root, "guest/build/snowflock-guest.elf");
const SNOWFLOCK = join(root, "dist/snowflock");
const FIRST_LINE = "hello from snowflock guest";

function sh(cmd: string[]): number {
  return Bun.spawnSync(cmd, { stdout: "inherit", stderr: "inherit" }).exitCode;
}

function setup(): void {
  if (!existsSync(SNOWFLOCK) || !existsSync(GUEST)) {
    console.error("building snowflock first (bun run build)");
    if (sh([process.execPath, "run", "build"]) !== 0) process.exit(1);
  }
  if (!Bun.which("qemu-system-x86_64")) {
    console.error("installing the peer: apt-get install qemu-system-x86");
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    Bun.spawnSync(["apt-get", "update", "-qq"], { env, stdout: "ignore" });
    if (Bun.spawnSync(["apt-get", "install", "-y", "-qq", "qemu-system-x86"], { env, stdout: "ignore" }).exitCode !== 0) {
      console.error("cannot install qemu-system-x86; run as root on Debian");
      process.exit(1);
    }
  }
}

/** Milliseconds from spawning `cmd` to `line` on its stdout; the process is then ended. */
async function timeToLine(cmd: string[], env: Record<string, string> = {}): Promise<number> {
  const started = performance.now();
  const child = Bun.spawn(cmd, { stdout: "pipe", stderr: "ignore", stdin: "ignore", env: { ...process.env, ...env } });
  const decoder = new TextDecoder();
  let seen = "";
  const timer = setTimeout(() => child.kill(9), 30_000);
  try {
    for await (const chunk of child.stdout) {
      seen += decoder.decode(chunk, { stream: true });
      if (seen.includes(FIRST_LINE)) return performance.now() - started;
    }
    throw new Error(`${cmd[0]} ended without printing '${FIRST_LINE}'; it printed: ${seen.slice(0, 300)}`);
  } finally {
    clearTimeout(timer);
    child.kill(9);
    await child.exited;
  }
}

setup();
const runDir = mkdtempSync(join(tmpdir(), "snowflock-bench-"));
const peers: Record<string, string[]> = {
  snowflock: [SNOWFLOCK, "run", "hello", "--mem", "256M"],
  "qemu -accel kvm": [
    "qemu-system-x86_64",
    "-accel",
    "kvm",
    "-cpu",
    "host,-arch-capabilities",
    "-m",
    "256M",
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-serial",
    "stdio",
    "-no-reboot",
    "-kernel",
    GUEST,
    "-append",
    "hello smp=1",
    "-device",
    "isa-debug-exit,iobase=0xf4,iosize=4",
  ],
};

const samples: Record<string, number[]> = {};
for (const name of Object.keys(peers)) samples[name] = [];
// Warm-up (page cache), then alternate so drift hits both alike.
for (const cmd of Object.values(peers)) await timeToLine(cmd, { SNOWFLOCK_RUN_DIR: runDir });
for (let i = 0; i < runs; i++) {
  for (const [name, cmd] of Object.entries(peers)) {
    samples[name]!.push(await timeToLine(cmd, { SNOWFLOCK_RUN_DIR: runDir }));
  }
  if (!json) process.stderr.write(`\rrun ${i + 1}/${runs}`);
}
if (!json) process.stderr.write("\n");

const rows = Object.entries(samples).map(([name, ms]) => ({ name, medianMs: median(ms), minMs: Math.min(...ms), maxMs: Math.max(...ms) }));
const snowflock = rows[0]!.medianMs;
const report = {
  benchmark: "boot: process start to first guest console line (hello)",
  machine: machineNote(),
  runs,
  results: rows.map((r) => ({ ...r, ratioToSnowflock: r.medianMs / snowflock })),
};
mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/boot.json"), `${JSON.stringify(report, null, 2)}\n`);
if (json) console.log(JSON.stringify(report, null, 2));
else {
  console.log(`${report.benchmark}\n${report.machine}; median of ${runs} runs\n`);
  console.log(`${"".padEnd(18)}${"median".padStart(10)}${"min".padStart(10)}${"max".padStart(10)}${"ratio".padStart(8)}`);
  for (const r of report.results) {
    console.log(
      `${r.name.padEnd(18)}${`${r.medianMs.toFixed(1)} ms`.padStart(10)}${`${r.minMs.toFixed(1)} ms`.padStart(10)}${`${r.maxMs.toFixed(1)} ms`.padStart(10)}${`${r.ratioToSnowflock.toFixed(2)}x`.padStart(8)}`,
    );
  }
}
