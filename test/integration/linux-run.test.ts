/**
 * `snowflock run --kernel` with Debian's stock kernel and a busybox initramfs whose /init is an
 * interactive shell on the serial console: the prompt shows in `logs`, `console --send` types at
 * it, and a fork carries the running Linux on in a clone that finishes a job started before and
 * draws other random numbers than its parent (VMGenID). A writable disk: each clone writes a
 * copy-on-write disk of its own, and the parent's image is never written by a clone; with --net each
 * clone, once `sf renew` has bound its network driver again, has a MAC of its own.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";
import { copyTestDisk, linuxAssetsMissing, stockKernelPath, writeBusyboxInitramfs } from "../support/linux-guest.ts";
import { within } from "../support/time.ts";

const missing = linuxAssetsMissing();
const BOOT_MS = within(60_000);
const PROMPT = "sf-shell# ";
/** The log ends at the prompt (busybox's ash asks the terminal where its cursor is right after it: ESC [6n). */
const atPrompt = (log: string) => /sf-shell# (\x1b\[6n)?$/.test(log);
const MAC_LINE = /\nmac ([0-9a-f]{2}(?::[0-9a-f]{2}){5})\n/;
const RANDOM_LINE = "echo random $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')";
const INIT = [`export PS1='${PROMPT}'`, 'echo "snowflock-linux: shell up"', "exec sh"].join("\n");

const sha256File = (path: string) => new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");

/** Waits until NAME's console log satisfies `done`; returns the log. */
async function waitForLog(runDir: string, name: string, done: (log: string) => boolean, timeoutMs: number): Promise<string> {
  const path = join(runDir, `${name}.log`);
  const deadline = performance.now() + timeoutMs;
  let log = "";
  while (performance.now() < deadline) {
    try {
      log = readFileSync(path, "utf8");
    } catch {}
    if (done(log)) return log;
    await Bun.sleep(100);
  }
  throw new Error(`${name}'s console did not show what was awaited within ${timeoutMs} ms; it ends:\n${log.slice(-2000)}`);
}

/** `snowflock run --kernel ... --detach` of the test's shell guest with a copy of the test disk, in a run directory of its own. */
async function startLinux(name: string, options: { readOnly: boolean; extra?: string[] }) {
  if (missing) throw new Error(missing);
  const runDir = testRunDir();
  const env = { SNOWFLOCK_RUN_DIR: runDir };
  const initrd = writeBusyboxInitramfs(runDir, INIT, { modules: true, tools: true });
  const disk = copyTestDisk(runDir);
  const started = await snowflock(
    [
      "run",
      "--kernel",
      stockKernelPath(),
      "--initrd",
      initrd,
      "--disk",
      options.readOnly ? `${disk},ro` : disk,
      ...(options.extra ?? []),
      "--name",
      name,
      "--detach",
    ],
    env,
  );
  expect(started.status, started.stderr).toBe(0);
  return { runDir, env, disk, started };
}

describeKvm("snowflock run --kernel: a stock Linux with a shell on its serial console", () => {
  if (missing && !KVM_REQUIRED) {
    test.skip(`skipped: ${missing}`, () => {});
    return;
  }

  test(
    "boots to the shell's prompt in `logs`; `console --send` runs a command; a fork's clone finishes a job begun before the fork and answers on its own console",
    async () => {
      const { runDir, env, started } = await startLinux("lin", { readOnly: true, extra: ["--mem", "256M"] });
      expect(started.stdout).toBe("lin\n");
      try {
        // The prompt has no newline: the log shows it once the guest stops printing to wait for input.
        await waitForLog(runDir, "lin", atPrompt, BOOT_MS);
        const ls = JSON.parse((await snowflock(["ls", "--json"], env)).stdout);
        expect(ls).toMatchObject([{ name: "lin", state: "running", memoryBytes: 256 << 20, vcpus: 1 }]);
        expect(ls[0].workload).toStartWith("vmlinuz console=ttyS0");

        const sent = await snowflock(["console", "lin", "--send", "echo answer-$((6*7))", "--json"], env);
        expect(sent.status, sent.stderr).toBe(0);
        expect(JSON.parse(sent.stdout)).toEqual({ name: "lin", sent: "echo answer-$((6*7))\n".length });
        await waitForLog(runDir, "lin", (log) => log.includes("\nanswer-42\n"), within(10_000));
        // The disk, read-only, through virtio-mmio (found in the ACPI tables).
        await snowflock(["console", "lin", "--send", "mount -o ro /dev/vda /mnt && cat /mnt/hello.txt"], env);
        await waitForLog(runDir, "lin", (log) => log.includes("\nsnowflock test disk\n"), within(20_000));

        // A job in the background, then the fork while it runs.
        await snowflock(["console", "lin", "--send", "(for i in 1 2 3 4 5 6; do sleep 1; echo job-$i; done; echo job-done) &"], env);
        await waitForLog(runDir, "lin", (log) => log.includes("job-1\n"), within(15_000));
        const fork = await snowflock(["fork", "lin", "--clones", "1", "--memory", "cow", "--json"], env);
        expect(fork.status, fork.stderr).toBe(0);
        const result = JSON.parse(fork.stdout);
        expect(result.clones).toHaveLength(1);
        const clone = result.clones[0].name as string;
        expect(clone).toBe("lin.1");

        const cloneLog = await waitForLog(runDir, clone, (log) => log.includes("job-done"), within(30_000));
        // The clone's console goes on from the fork: the job's lines before it are the parent's alone.
        expect(cloneLog).not.toContain("job-1\n");
        await snowflock(["console", clone, "--send", "echo clone-answer-$((40+2))"], env);
        await waitForLog(runDir, clone, (log) => log.includes("\nclone-answer-42\n"), within(10_000));
        await waitForLog(runDir, "lin", (log) => log.includes("job-done"), within(30_000));

        // The clone's kernel was told of its new generation (VMGenID): its random numbers are its own.
        const random = async (name: string) => {
          await snowflock(["console", name, "--send", RANDOM_LINE], env);
          const log = await waitForLog(runDir, name, (l) => /\nrandom [0-9a-f]{64}\n/.test(l), within(10_000));
          return log.match(/\nrandom ([0-9a-f]{64})\n/)![1];
        };
        const [parentRandom, cloneRandom] = [await random("lin"), await random(clone)];
        expect(cloneRandom).not.toBe(parentRandom);
        await snowflock(["console", clone, "--send", "echo vmgenid-$(ls /sys/bus/acpi/drivers/vmgenid | grep -c VMGENCTR)"], env);
        await waitForLog(runDir, clone, (log) => log.includes("\nvmgenid-1\n"), within(10_000));
        // The clone reads the shared read-only disk through its own device (its page cache dropped first).
        await snowflock(["console", clone, "--send", "echo 3 > /proc/sys/vm/drop_caches; echo clone-$(cat /mnt/hello.txt)"], env);
        await waitForLog(runDir, clone, (log) => log.includes("\nclone-snowflock test disk\n"), within(20_000));
      } finally {
        await snowflock(["kill", "lin"], env);
      }
      expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout)).toEqual([]);
    },
    BOOT_MS + within(120_000),
  );

  test(
    "a writable ext4 disk: a fork's clones each write a file into a copy-on-write disk of their own; the parent's image is byte-for-byte unchanged and holds only the parent's file; each clone draws its own random numbers and, after sf renew, has a MAC of its own (--net)",
    async () => {
      const { runDir, env, disk } = await startLinux("rw", { readOnly: false, extra: ["--net", "sftest1"] });
      const clones = ["rw.1", "rw.2"];
      let before = "";
      try {
        await waitForLog(runDir, "rw", atPrompt, BOOT_MS);
        // Unmounted before the fork: nothing in the parent writes the image in the background.
        await snowflock(
          ["console", "rw", "--send", "mount /dev/vda /mnt && echo written-by-guest > /mnt/new.txt && umount /mnt && echo wrote-ok"],
          env,
        );
        await waitForLog(runDir, "rw", (log) => log.includes("\nwrote-ok\n"), within(20_000));
        await snowflock(["console", "rw", "--send", `echo mac $(cat /sys/class/net/eth0/address)`], env);
        const macs = [(await waitForLog(runDir, "rw", (log) => MAC_LINE.test(log), within(20_000))).match(MAC_LINE)![1]!];
        before = sha256File(disk);
        const fork = await snowflock(["fork", "rw", "--clones", "2", "--memory", "cow", "--json"], env);
        expect(fork.status, fork.stderr).toBe(0);
        expect(JSON.parse(fork.stdout).clones.map((c: { name: string }) => c.name)).toEqual(clones);
        const randoms: string[] = [];
        for (const clone of clones) {
          await snowflock(
            [
              "console",
              clone,
              "--send",
              `sf renew && echo mac $(cat /sys/class/net/eth0/address) && mount /dev/vda /mnt && echo ${clone} > /mnt/${clone}.txt && sync && echo $(cat /mnt/new.txt) $(ls /mnt | grep -c '^rw\\.') && umount /mnt && ${RANDOM_LINE}`,
            ],
            env,
          );
          // Each clone sees the parent's file and its own, not its sibling's.
          const log = await waitForLog(runDir, clone, (l) => /\nrandom [0-9a-f]{64}\n/.test(l), within(30_000));
          expect(log).toContain("\nwritten-by-guest 1\n");
          randoms.push(log.match(/\nrandom ([0-9a-f]{64})\n/)![1]!);
          // The clone's log starts with its parent's; its own MAC line is the last one.
          macs.push([...log.matchAll(new RegExp(MAC_LINE, "g"))].at(-1)![1]!);
        }
        expect(new Set(randoms).size).toBe(2);
        expect(new Set(macs).size).toBe(3);
        expect(sha256File(disk)).toBe(before);
        for (const clone of clones) expect((await snowflock(["kill", clone], env)).status).toBe(0);
        await snowflock(["console", "rw", "--send", "poweroff -f"], env);
        for (const deadline = performance.now() + within(20_000); performance.now() < deadline; ) {
          if (JSON.parse((await snowflock(["ls", "--json"], env)).stdout).length === 0) break;
          await Bun.sleep(200);
        }
        expect(JSON.parse((await snowflock(["ls", "--json"], env)).stdout)).toEqual([]);
      } finally {
        for (const name of [...clones, "rw"]) await snowflock(["kill", name], env);
      }
      const debugfs = (command: string) =>
        Bun.spawnSync(["debugfs", "-R", command, disk], { stdout: "pipe", stderr: "pipe" }).stdout.toString();
      expect(debugfs("cat /new.txt")).toBe("written-by-guest\n");
      expect(debugfs("ls -l /")).not.toContain("rw.1.txt");
      expect(sha256File(disk)).toBe(before);
    },
    BOOT_MS + within(150_000),
  );
});
