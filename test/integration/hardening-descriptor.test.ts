/**
 * Issue 10 item 9: `descriptor -o` writes through an exclusive 0600 temporary file renamed into
 * place, so the descriptor is private and a link planted at the path is replaced, never followed.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { snowflock, testRunDir } from "../support/cli.ts";
import { describeKvm } from "../support/kvm.ts";

describeKvm("descriptor -o", () => {
  test("the descriptor file is private (0600) and replaces a planted link instead of writing through it", async () => {
    const dir = testRunDir();
    const env = { SNOWFLOCK_RUN_DIR: dir };
    expect((await snowflock(["run", "serve", "--detach", "--name", "web", "--mem", "64M"], env)).status).toBe(0);
    try {
      const out = join(testRunDir(), "web.sfd");
      const victim = join(testRunDir(), "victim");
      writeFileSync(victim, "precious\n");
      symlinkSync(victim, out);
      const written = await snowflock(["descriptor", "web", "-o", out], env);
      expect(written.status).toBe(0);
      expect(statSync(out).isFile()).toBe(true);
      expect(statSync(out).mode & 0o777).toBe(0o600);
      expect(readFileSync(victim, "utf8")).toBe("precious\n");
      expect(readdirSync(join(out, "..")).sort()).toEqual(["web.sfd"]);
    } finally {
      await snowflock(["kill", "web"], env);
    }
  });
});
