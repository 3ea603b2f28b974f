/**
 * A stock Linux kernel on snowflock's KVM machine: Debian's linux-image-amd64 bzImage booted
 * through the 32-bit boot protocol with a busybox initramfs (assets: test/linux/build-assets.sh).
 */
import { expect, test } from "bun:test";
import { KvmMachine } from "../../src/backend/kvm/machine.ts";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";
import { busyboxInitramfs, linuxAssetsMissing, stockKernel } from "../support/linux-guest.ts";
import { within } from "../support/time.ts";

const missing = linuxAssetsMissing();
const BOOT_MS = within(40_000);

describeKvm("a stock Linux kernel (Debian's bzImage) on the KVM backend", () => {
  if (missing && !KVM_REQUIRED) {
    test.skip(`skipped: ${missing}`, () => {});
    return;
  }

  test(
    "boots through the boot protocol to its initramfs' /init, which reads the machine and reboots: the VM ends with status 0",
    async () => {
      if (missing) throw new Error(missing);
      const lines: string[] = [];
      const initrd = busyboxInitramfs(
        [
          'echo "snowflock-linux: init up; cpus $(nproc); $(grep MemTotal /proc/meminfo | tr -s " ")"',
          'echo "snowflock-linux: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"',
          'echo "snowflock-linux: cmdline $(cat /proc/cmdline)"',
          "reboot -f",
        ].join("\n"),
      );
      const machine = KvmMachine.boot(
        stockKernel(),
        256 * 2 ** 20,
        "console=ttyS0 panic=-1 acpi=off quiet loglevel=4",
        { vcpus: 1, onConsole: (line) => lines.push(line) },
        initrd,
      );
      await machine.start();
      const timer = setTimeout(() => void machine.stop(), BOOT_MS);
      const end = await machine.ended;
      clearTimeout(timer);
      const text = lines.join("\n");
      console.log(lines.filter((l) => l.startsWith("snowflock-linux:")).join("\n"));
      expect(end, text.slice(-3000)).toEqual({ kind: "exit", status: 0 });
      expect(text).toContain("snowflock-linux: init up; cpus 1; MemTotal:");
      expect(text).toContain("snowflock-linux: cmdline console=ttyS0 panic=-1 acpi=off quiet loglevel=4");
    },
    BOOT_MS + 30_000,
  );
});
