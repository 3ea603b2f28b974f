/** A VMM's control socket, served through the bounded listener: byte limits, idle timeout, slow answers. */
import { afterAll, describe, expect, test } from "bun:test";
import { controlRequest } from "../../src/vmm/control-client.ts";
import { serveControl } from "../../src/vmm/control-server.ts";
import { vmPaths } from "../../src/run-dir.ts";
import { testRunDir } from "../support/cli.ts";
import { within } from "../support/time.ts";

process.env.SNOWFLOCK_RUN_DIR = testRunDir();
// The control socket's 30 s idle timeout, scaled to 300 ms for this server only: test files share
// one process, and other modules read the scale when they load.
const IDLE_MS = 300;
const { socket } = vmPaths("vm1");
const savedScale = process.env.SNOWFLOCK_TIMEOUT_SCALE;
process.env.SNOWFLOCK_TIMEOUT_SCALE = "0.01";
const server = serveControl(socket, async (request) => {
  if (request.op === "kill") await Bun.sleep(3 * IDLE_MS);
  return { ok: true, op: request.op };
});
if (savedScale === undefined) delete process.env.SNOWFLOCK_TIMEOUT_SCALE;
else process.env.SNOWFLOCK_TIMEOUT_SCALE = savedScale;
afterAll(() => server.close());

/** Connects, sends `text`, and resolves with everything the server sent once it closes. */
function exchange(text: string, limitMs: number): Promise<{ answer: string; closed: boolean }> {
  return new Promise((resolve) => {
    let answer = "";
    let pending = Buffer.from(text);
    const send = (s: { write(b: Uint8Array): number }) => void (pending = pending.subarray(Math.max(0, s.write(pending))));
    const timer = setTimeout(() => resolve({ answer, closed: false }), limitMs);
    void Bun.connect({
      unix: socket,
      socket: {
        open: send,
        drain: send,
        data: (_s, chunk) => void (answer += chunk.toString()),
        close() {
          clearTimeout(timer);
          resolve({ answer, closed: true });
        },
      },
    });
  });
}

describe("a VMM's control socket", () => {
  test("answers requests, one slower than the idle timeout included", async () => {
    expect(await controlRequest("vm1", "status")).toEqual({ ok: true, op: "status" } as never);
    expect(await controlRequest("vm1", "kill")).toEqual({ ok: true, op: "kill" } as never);
  });

  test("a request line of 1 MiB is refused without waiting for its end", async () => {
    const { answer, closed } = await exchange("x".repeat(1024 * 1024), within(5000));
    expect(closed).toBe(true);
    expect(JSON.parse(answer)).toEqual({ ok: false, error: "request too large" });
  });

  test("a connection that sends nothing is closed by the idle timeout", async () => {
    const { answer, closed } = await exchange("", within(IDLE_MS * 10));
    expect(closed).toBe(true);
    expect(JSON.parse(answer)).toEqual({ ok: false, error: "idle for too long" });
  });
});
