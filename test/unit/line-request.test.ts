/** requestLine over a Unix socket (the VMM control client's path): an answer in pieces, a bounded answer, a closed connection, no listener. */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requestLine } from "../../src/net/line-request.ts";

const dir = mkdtempSync(join(tmpdir(), "snowflock-line-request-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A Unix socket server that answers each connection's first data with `answer(request)` pieces. */
function serve(name: string, answer: (request: string) => string[]) {
  const path = join(dir, name);
  const server = Bun.listen({
    unix: path,
    socket: {
      data(socket, chunk) {
        const pieces = answer(chunk.toString());
        if (pieces.length === 0) return void socket.end();
        for (const piece of pieces) socket.write(piece);
      },
    },
  });
  return { path, stop: () => server.stop(true) };
}

const options = { timeoutMs: 2000, maxAnswerBytes: 1024, failure: (why: string) => new Error(`failed: ${why}`) };

test("the first line of an answer sent in pieces, without its newline; the request arrives whole", async () => {
  const seen: string[] = [];
  const s = serve("pieces.sock", (request) => (seen.push(request), ['{"ok":', "true}\nignored"]));
  expect(await requestLine({ unix: s.path }, '{"op":"status"}\n', options)).toBe('{"ok":true}');
  expect(seen).toEqual(['{"op":"status"}\n']);
  s.stop();
});

test("an answer past the limit without a newline, a closed connection and a missing socket fail by name", async () => {
  const long = serve("long.sock", () => ["x".repeat(2048)]);
  await expect(requestLine({ unix: long.path }, "q\n", options)).rejects.toThrow("failed: its answer ran past 1024 bytes without ending");
  long.stop();
  const closing = serve("closing.sock", () => []);
  await expect(requestLine({ unix: closing.path }, "q\n", options)).rejects.toThrow("failed: the connection closed");
  closing.stop();
  await expect(requestLine({ unix: join(dir, "absent.sock") }, "q\n", options)).rejects.toThrow(/^failed: /);
});
