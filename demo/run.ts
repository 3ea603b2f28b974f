/**
 * `bun run demo`: the demo (demo/demo.ts) where it can run. Where /dev/kvm works it runs here;
 * where it does not, it runs inside the nested KVM host (test/nested: a Debian kernel under QEMU's
 * software emulation whose kvm-amd gives a real /dev/kvm), which is built on first use (root,
 * apt-get, a few minutes, each step shown). `--native` or `--nested` (or SNOWFLOCK_DEMO=native|nested)
 * forces either path. Exits with the demo's status.
 */
import { join } from "node:path";
import { loadBackend } from "../src/backend/select.ts";

const ROOT = join(import.meta.dir, "..");
/** Snowflock's own waits inside the nested host: it runs 10-50 times slower than KVM. */
const NESTED_TIME_SCALE = "10";

async function chosenPath(): Promise<"native" | "nested"> {
  const flags = process.argv.slice(2);
  const unknown = flags.filter((f) => f !== "--native" && f !== "--nested");
  if (unknown.length > 0 || flags.length > 1) {
    console.error(`usage: bun run demo [--native | --nested]   (not: ${flags.join(" ")})`);
    process.exit(2);
  }
  const asked = flags[0]?.slice(2) ?? process.env.SNOWFLOCK_DEMO;
  if (asked === "native" || asked === "nested") {
    console.error(`running the demo ${asked === "native" ? "on this host" : "inside the nested KVM host"} (as asked)`);
    return asked;
  }
  if (asked !== undefined && asked !== "") {
    console.error(`SNOWFLOCK_DEMO must be native or nested, not '${asked}'`);
    process.exit(2);
  }
  if ((await (await loadBackend("kvm")).doctor()).available) {
    console.error("/dev/kvm works here: running the demo on this host");
    return "native";
  }
  console.error("no /dev/kvm here: running the demo inside the nested KVM host under software emulation; times will be 10-50x slower");
  return "nested";
}

async function run(command: string[], env: Record<string, string>): Promise<number> {
  const child = Bun.spawn(command, { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, ...env } });
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);
  return child.exited;
}

const demo = join(ROOT, "demo/demo.ts");
const path = await chosenPath();
const status =
  path === "native"
    ? await run([process.execPath, demo], {})
    : // The nested host has this machine's bun on its PATH (test/nested/build-host.sh).
      await run(["bash", join(ROOT, "test/nested/run.sh"), "--", "bun", demo], {
        SNOWFLOCK_TIMEOUT_SCALE: process.env.SNOWFLOCK_TIMEOUT_SCALE ?? NESTED_TIME_SCALE,
        SNOWFLOCK_NESTED_SMP: process.env.SNOWFLOCK_NESTED_SMP ?? "1",
        SNOWFLOCK_NESTED_MEM: process.env.SNOWFLOCK_NESTED_MEM ?? "4G",
        SNOWFLOCK_NESTED_TIMEOUT: process.env.SNOWFLOCK_NESTED_TIMEOUT ?? "1800",
      });
process.exit(status);
