/**
 * The agent client against a peer that is no agent (a stand-in server on loopback): whatever it
 * sends, the client's memory stays bounded and the request fails with a clear reason.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { agentRequest } from "../../src/cluster/agent-client.ts";
import { MAX_BODY_BYTES } from "../../src/cluster/agent-protocol.ts";

const SECRET = "ab".repeat(32);
const servers: Array<{ stop(closeActive?: boolean): void }> = [];
afterEach(() => {
  for (const server of servers.splice(0)) server.stop(true);
});

/** A listener that answers every connection with `answer(socket)`. */
function peer(answer: (socket: { write(data: Uint8Array | string): number; end(): void }) => void): number {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { open: answer, data() {} } });
  servers.push(server);
  return server.port;
}

describe("agent client", () => {
  test("an answer that never ends its line is cut off once it passes the limit", async () => {
    const block = new Uint8Array(1 << 20).fill(0x41);
    const port = peer((socket) => {
      // Keep writing as the socket drains; the client must stop reading long before memory runs out.
      const pump = () => {
        for (let i = 0; i < 64; i++) if (socket.write(block) < block.byteLength) break;
      };
      const timer = setInterval(pump, 1);
      setTimeout(() => clearInterval(timer), 20_000);
      pump();
    });
    const failure = await agentRequest({ host: "h1", address: "127.0.0.1", port }, SECRET, "hello", null, 20_000).then(
      () => undefined,
      (error: Error) => error.message,
    );
    expect(failure).toContain(`its answer ran past ${MAX_BODY_BYTES} bytes without ending`);
  });

  test("an answer that is not JSON, or not signed, is refused by name", async () => {
    const garbage = peer((socket) => void socket.write("hello there\n"));
    await expect(agentRequest({ host: "h1", address: "127.0.0.1", port: garbage }, SECRET, "hello")).rejects.toThrow(
      "answered with something that is not JSON",
    );
    const unsigned = peer((socket) => void socket.write('{"ok":true}\n'));
    await expect(agentRequest({ host: "h1", address: "127.0.0.1", port: unsigned }, SECRET, "hello")).rejects.toThrow(
      "agent on h1 refused",
    );
  });
});
