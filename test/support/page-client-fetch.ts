/**
 * A memory server's client in a process of its own (PageClient blocks, and the server under test
 * runs on the test's event loop): `bun page-client-fetch.ts SERVER PAGES REQUESTS_JSON` fetches
 * the requests with fetchEach and prints one line per answer, "P,Q,... SHA256" of its pages in
 * order, or "error: MESSAGE" and status 1.
 */
import { createHash } from "node:crypto";
import { PageClient } from "../../src/memory/page-client.ts";
import { parsePageServer, type UnicastAddress } from "../../src/memory/page-server-address.ts";

const [server = "", pages = "0", requests = "[]"] = process.argv.slice(2);
try {
  const client = PageClient.connect(parsePageServer(server) as UnicastAddress, { timeoutMs: 10_000, wakeFd: -1, pageCount: Number(pages) });
  client.fetchEach(JSON.parse(requests) as number[][], (asked, contents) => {
    const hash = createHash("sha256");
    for (const page of contents) hash.update(page);
    console.log(`${asked.join(",")} ${hash.digest("hex")}`);
  });
  client.close();
} catch (error) {
  console.log(`error: ${(error as Error).message}`);
  process.exit(1);
}
