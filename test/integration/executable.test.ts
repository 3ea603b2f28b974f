/** The built executable carries the guest image and WASM kernels: copied alone, it still runs. */
import { expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dataset, sha256Hex } from "../../src/guest/dataset.ts";
import { describeKvm, KVM_REQUIRED } from "../support/kvm.ts";

const BUILT = join(import.meta.dir, "../../dist/snowflock");

describeKvm("the single executable", () => {
  test.skipIf(!existsSync(BUILT) && !KVM_REQUIRED)(
    "copied alone to another directory, it boots its guest and uses its WASM kernel",
    async () => {
      expect(existsSync(BUILT)).toBe(true); // `bun run build` makes it
      const dir = mkdtempSync(join(tmpdir(), "snowflock-alone-"));
      const alone = join(dir, "snowflock");
      copyFileSync(BUILT, alone);
      const child = Bun.spawn([alone, "run", "sha256", "size=100000", "seed=3", "--vcpus", "2", "--json"], {
        cwd: dir,
        env: { ...process.env, SNOWFLOCK_RUN_DIR: join(dir, "run") },
        stdout: "pipe",
        stderr: "pipe",
      });
      const [stdout, status] = await Promise.all([new Response(child.stdout).text(), child.exited]);
      expect(status).toBe(0);
      const result = JSON.parse(stdout);
      expect(result.console).toEqual([`sha256 ${sha256Hex(dataset(3n, 100000))}`]);
      expect(result.pagesTouched).toBeGreaterThan(0); // counted by the WASM page-bitmap kernel
    },
  );
});
