/** The page source of a clone on its parent's host: the frozen image itself, and what it refuses. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SnowflockError } from "../../src/errors.ts";
import { ImageSource } from "../../src/memory/image-source.ts";
import { formatPageServer, parsePageServer } from "../../src/memory/page-server-address.ts";
import { openPageSource } from "../../src/memory/page-source.ts";

const PAGE = 4096;
const dir = mkdtempSync(join(tmpdir(), "sf-image-source-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An image of `pages` pages, each filled with its own number. */
function image(name: string, pages: number): string {
  const bytes = new Uint8Array(pages * PAGE);
  for (let page = 0; page < pages; page++) bytes.fill(page + 1, page * PAGE, (page + 1) * PAGE);
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

describe("ImageSource", () => {
  test("fetches each page asked for from the image, and counts the bytes", () => {
    const source = ImageSource.open(image("eight", 8), 8);
    try {
      const [first, last, middle] = source.fetch([0, 7, 3]);
      expect(first!.byteLength).toBe(PAGE);
      expect(first!.every((b) => b === 1)).toBe(true);
      expect(last!.every((b) => b === 8)).toBe(true);
      expect(middle!.every((b) => b === 4)).toBe(true);
      expect(source.bytesReceived()).toBe(3 * PAGE);
      expect(source.fd).toBe(-1); // nothing arrives unasked
    } finally {
      source.close();
    }
  });

  test("refuses an image smaller than the guest, and one that is not there, naming it", () => {
    const small = image("small", 2);
    expect(() => ImageSource.open(small, 4)).toThrow(`the frozen image at ${small} has ${2 * PAGE} bytes, the guest has ${4 * PAGE}`);
    const gone = join(dir, "gone");
    const error = (() => {
      try {
        ImageSource.open(gone, 4);
      } catch (e) {
        return e as SnowflockError;
      }
    })();
    expect(error).toBeInstanceOf(SnowflockError);
    expect(error!.message).toContain(`cannot open the frozen image at ${gone}`);
    expect(error!.hint).toContain("parent VM");
  });

  test("is what an image: address opens, and the address round-trips", () => {
    const path = image("four", 4);
    expect(parsePageServer(formatPageServer({ kind: "image", path }))).toEqual({ kind: "image", path });
    expect(() => parsePageServer("image:")).toThrow("bad memory-server address");
    const source = openPageSource({ server: `image:${path}`, pageCount: 4, timeoutMs: 1000, wakeFd: -1, onExtraPage: () => {} });
    try {
      expect(source.fetch([2])[0]!.every((b) => b === 3)).toBe(true);
    } finally {
      source.close();
    }
  });
});
