/**
 * The peer for the fork benchmark: the same guest booted by `qemu-system-x86_64 -accel kvm
 * -kernel` (the built-in guest's ELF, or the user's bzImage with its initrd and command line), its
 * state saved with QMP `migrate` to a file, and N QEMUs restored from that file (`-incoming
 * exec:cat FILE`) in parallel. One source VM is booted once and resumed between runs.
 */
import { statSync, writeFileSync } from "node:fs";
import { guestImage } from "../../guest/image.ts";
import { awaitConsole, BUILTIN_WORKLOAD, type BenchGuest, kernelCmdline } from "../bench-guest.ts";
import { join } from "node:path";
import type { Subprocess } from "bun";

const TICK = /tick \d+ id \d+/g;
const BOOT_TIMEOUT_MS = 120_000;
const RESTORE_TIMEOUT_MS = 120_000;

/** Every QEMU this module started and has not yet seen end, so a Ctrl-C handler can kill them. */
const live = new Set<Subprocess>();

export function killAllQemu(): void {
  for (const child of live) child.kill(9);
}

export function qemuAvailable(): boolean {
  return Bun.which("qemu-system-x86_64") !== null;
}

/** apt-get installs qemu-system-x86 if it is missing; returns a reason when that fails. */
export function ensureQemu(say: (line: string) => void): string | undefined {
  if (qemuAvailable()) return undefined;
  if (!Bun.which("apt-get")) return "qemu-system-x86_64 is missing and there is no apt-get to install qemu-system-x86 with";
  say("installing the peer: apt-get install qemu-system-x86");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  Bun.spawnSync(["apt-get", "update", "-qq"], { env, stdout: "ignore", stderr: "ignore" });
  const install = Bun.spawnSync(["apt-get", "install", "-y", "-qq", "qemu-system-x86"], { env, stdout: "ignore", stderr: "pipe" });
  if (install.exitCode === 0 && qemuAvailable()) return undefined;
  const why =
    install.exitCode === 0
      ? "installed, but qemu-system-x86_64 is not on PATH"
      : install.stderr.toString().trim().split("\n").pop() || "not root or not Debian?";
  return `qemu-system-x86_64 is missing and apt-get could not install qemu-system-x86 (${why})`;
}

/** A minimal QMP client: one JSON object per line; answers matched to requests by id. */
class Qmp {
  private buffer = "";
  private nextId = 1;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private socket: Awaited<ReturnType<typeof Bun.connect>> | undefined;
  /** Called with the name of each asynchronous event (e.g. RESUME). */
  onEvent: (event: string) => void = () => {};

  static async connect(path: string, alive: () => boolean, timeoutMs: number): Promise<Qmp> {
    const qmp = new Qmp();
    const deadline = Date.now() + timeoutMs;
    let greeting!: () => void;
    const greeted = new Promise<void>((r) => (greeting = r));
    for (;;) {
      try {
        qmp.socket = await Bun.connect({
          unix: path,
          socket: {
            data: (_s, chunk) => qmp.receive(chunk.toString(), greeting),
            close: () => qmp.failAll(new Error("QMP connection closed")),
          },
        });
        break;
      } catch (error) {
        if (!alive()) throw new Error("QEMU ended before its QMP socket opened");
        if (Date.now() > deadline) throw new Error(`QMP socket ${path} did not open: ${(error as Error).message}`);
        await Bun.sleep(2);
      }
    }
    await greeted;
    await qmp.execute("qmp_capabilities");
    return qmp;
  }

  private receive(text: string, greeting: () => void): void {
    this.buffer += text;
    let newline: number;
    while ((newline = this.buffer.indexOf("\n")) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      const message = JSON.parse(line) as { QMP?: unknown; id?: number; return?: unknown; error?: { desc: string }; event?: string };
      if (message.QMP) greeting();
      else if (message.event) this.onEvent(message.event);
      else if (message.id !== undefined) {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) waiter?.reject(new Error(`QMP: ${message.error.desc}`));
        else waiter?.resolve(message.return);
      }
    }
  }

  private failAll(error: Error): void {
    for (const waiter of this.pending.values()) waiter.reject(error);
    this.pending.clear();
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.socket!.write(`${JSON.stringify({ execute: command, arguments: args, id })}\n`);
    });
  }

  close(): void {
    this.socket?.end();
  }
}

interface Instance {
  child: Subprocess;
  qmp: Qmp;
  serial: string;
  stderr: Promise<string>;
}

async function stopInstance(instance: Instance): Promise<void> {
  instance.qmp.close();
  instance.child.kill(9);
  await instance.child.exited;
  live.delete(instance.child);
}

export class QemuSnapshotPeer {
  private source: Instance | undefined;
  private runs = 0;

  /** `dir`: a private temp directory for the image, sockets, serial logs and the saved state. */
  constructor(
    private readonly dir: string,
    private readonly memoryBytes: number,
    private readonly guest: BenchGuest,
  ) {
    if (guest.kind === "builtin") writeFileSync(this.elfPath, guestImage());
  }

  /** -kernel, -initrd and -append for the guest. */
  private kernelArguments(): string[] {
    if (this.guest.kind === "builtin") return ["-kernel", this.elfPath, "-append", `${BUILTIN_WORKLOAD.join(" ")} smp=1`];
    return [
      "-kernel",
      this.guest.kernel,
      ...(this.guest.initrd ? ["-initrd", this.guest.initrd] : []),
      "-append",
      kernelCmdline(this.guest),
    ];
  }

  private get elfPath(): string {
    return join(this.dir, "guest.elf");
  }

  get statePath(): string {
    return join(this.dir, "state.bin");
  }

  private command(tag: string, incoming?: string): string[] {
    return [
      "qemu-system-x86_64",
      "-accel",
      "kvm",
      "-cpu",
      "host,-arch-capabilities",
      "-m",
      `${this.memoryBytes / 2 ** 20}M`,
      "-smp",
      "1",
      "-nodefaults",
      "-no-user-config",
      "-display",
      "none",
      "-serial",
      `file:${join(this.dir, `${tag}.serial`)}`,
      "-qmp",
      `unix:${join(this.dir, `${tag}.qmp`)},server=on,wait=off`,
      ...this.kernelArguments(),
      ...(incoming ? ["-incoming", incoming] : []),
    ];
  }

  private async launch(tag: string, incoming?: string): Promise<Instance> {
    const child = Bun.spawn(this.command(tag, incoming), { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    live.add(child);
    void child.exited.then(() => live.delete(child));
    const stderr = new Response(child.stderr).text();
    try {
      const qmp = await Qmp.connect(join(this.dir, `${tag}.qmp`), () => child.exitCode === null, 30_000);
      return { child, qmp, serial: join(this.dir, `${tag}.serial`), stderr };
    } catch (error) {
      child.kill(9);
      await child.exited;
      throw new Error(`${(error as Error).message}: ${(await stderr).trim().split("\n").slice(-2).join(" ")}`);
    }
  }

  /** Boots the source VM and waits until its console shows it ready; ms to that and to its first console byte. */
  async boot(): Promise<{ bootMs: number; firstLineMs: number }> {
    const started = performance.now();
    const source = await this.launch("source");
    this.source = source;
    const firstByteAt = await awaitConsole(
      this.guest,
      () =>
        Bun.file(source.serial)
          .text()
          .catch(() => ""),
      () => source.child.exitCode === null,
      BOOT_TIMEOUT_MS,
      "the QEMU source VM",
    );
    return { bootMs: performance.now() - started, firstLineMs: firstByteAt - started };
  }

  private async waitForTicks(instance: Instance, more: number, timeoutMs: number): Promise<void> {
    const count = async () =>
      (
        (
          await Bun.file(instance.serial)
            .text()
            .catch(() => "")
        ).match(TICK) ?? []
      ).length;
    const target = (await count()) + more;
    const deadline = Date.now() + timeoutMs;
    while ((await count()) < target) {
      if (instance.child.exitCode !== null)
        throw new Error(`QEMU ended (status ${instance.child.exitCode}): ${(await instance.stderr).trim()}`);
      if (Date.now() > deadline) throw new Error(`the QEMU guest printed no tick line within ${timeoutMs / 1000} s`);
      await Bun.sleep(10);
    }
  }

  /**
   * Saves the running source VM's state to statePath: a live `migrate` to `exec:cat > FILE`
   * (it stops the VM for the last pass), polled with query-migrate until completed. A source
   * that was running when saved makes its restored copies start running on their own.
   */
  async save(): Promise<{ saveMs: number; downtimeMs: number; bytes: number }> {
    const source = this.source;
    if (!source) throw new Error("boot() the source VM first");
    if (this.runs++ > 0) {
      await source.qmp.execute("cont");
      // The built-in guest shows it runs again; a Linux guest at its prompt prints nothing.
      if (this.guest.kind === "builtin") await this.waitForTicks(source, 1, 10_000);
      else await Bun.sleep(100);
    }
    await source.qmp.execute("migrate-set-parameters", { "max-bandwidth": 2 ** 40 });
    const started = performance.now();
    await source.qmp.execute("migrate", { uri: `exec:cat > ${this.statePath}` });
    for (;;) {
      const info = await source.qmp.execute<{ status?: string; downtime?: number; "error-desc"?: string }>("query-migrate");
      if (info.status === "completed")
        return { saveMs: performance.now() - started, downtimeMs: info.downtime ?? NaN, bytes: statSync(this.statePath).size };
      if (info.status === "failed" || info.status === "cancelled")
        throw new Error(`QEMU migrate ${info.status}: ${info["error-desc"] ?? ""}`);
      await Bun.sleep(1);
    }
  }

  /** Starts n QEMUs restoring statePath in parallel; resolves when all report `running`; kills them. */
  async restore(n: number): Promise<number> {
    const started = performance.now();
    const instances: Instance[] = [];
    try {
      const outcomes = await Promise.allSettled(
        Array.from({ length: n }, async (_, i) => {
          const instance = await this.launch(`restore-${i}`, `exec:cat ${this.statePath}`);
          instances.push(instance);
          await this.waitRunning(instance);
        }),
      );
      const elapsed = performance.now() - started;
      const failure = outcomes.find((o) => o.status === "rejected");
      if (failure) throw failure.reason;
      return elapsed;
    } finally {
      await Promise.all(instances.map(stopInstance));
    }
  }

  private async waitRunning(instance: Instance): Promise<void> {
    let resumed = false;
    instance.qmp.onEvent = (event) => (resumed ||= event === "RESUME");
    const deadline = Date.now() + RESTORE_TIMEOUT_MS;
    for (;;) {
      if (resumed) return;
      const status = await instance.qmp.execute<{ status: string }>("query-status").catch(() => undefined);
      if (status?.status === "running") return;
      if (instance.child.exitCode !== null)
        throw new Error(`restored QEMU ended (status ${instance.child.exitCode}): ${(await instance.stderr).trim()}`);
      if (status && !["inmigrate", "prelaunch", "paused", "restore-vm", "finish-migrate"].includes(status.status)) {
        throw new Error(`restored QEMU is ${status.status}, not running`);
      }
      if (Date.now() > deadline) throw new Error(`restored QEMU not running within ${RESTORE_TIMEOUT_MS / 1000} s`);
      await Bun.sleep(5);
    }
  }

  async close(): Promise<void> {
    if (this.source) await stopInstance(this.source);
    this.source = undefined;
  }
}
