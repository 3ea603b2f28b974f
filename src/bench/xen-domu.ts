/** The benchmarks' domUs on Xen: an xl config under another name and size, started until its drivers are up, destroyed. */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DomainOperations } from "../backend/backend.ts";
import { SnowflockError } from "../errors.ts";

export async function sh(command: string[], what: string): Promise<number> {
  const started = performance.now();
  const child = Bun.spawn(command, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [err, status] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  if (status !== 0) throw new SnowflockError("INTERNAL", `${what} failed (${command.join(" ")}): ${err.trim().split("\n").pop()}`);
  return performance.now() - started;
}

export const destroy = (name: string) => Bun.spawn(["xl", "destroy", name], { stdout: "ignore", stderr: "ignore" }).exited;

/** A copy of the xl config with another name and memory = maxmem = `memoryBytes` (paging refuses more maxmem), for `xl create`/`xl restore`. */
export function configNamed(source: string, name: string, dir: string, memoryBytes: number): string {
  const text = readFileSync(source, "utf8").replace(/^\s*(name|memory|maxmem)\s*=.*$/gm, "");
  const path = join(dir, `${name}.cfg`);
  const mib = Math.round(memoryBytes / 2 ** 20);
  writeFileSync(path, `${text}\nname = "${name}"\nmemory = ${mib}\nmaxmem = ${mib}\n`);
  return path;
}

/** Starts the parent domU, again if it dies while booting (at most three times); its memory size. */
export async function startParent(domains: DomainOperations, name: string, config: string, say: (line: string) => void): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    await destroy(name);
    await sh(["xl", "create", config], "starting the parent domU");
    // Until the guest's Xen drivers are up; false if it shut down first (see bootDomU in test/xen:
    // the stock kernel now and then dies in its first instructions under emulation).
    if (await domains.waitReady(name, 600_000)) return (await domains.list()).find((d) => d.name === name)!.memoryBytes;
    if (attempt === 3)
      throw new SnowflockError("VM_STATE", `the parent domU ${name} shut down while booting, three times`, "`xl dmesg` says why");
    say(`the parent domU died while booting (attempt ${attempt}); starting it again`);
  }
}
