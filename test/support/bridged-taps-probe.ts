/**
 * Run inside a network namespace by vm-network.test.ts: opens two VM taps on BRIDGE (as two VMs
 * of one family would), sends a broadcast frame from the first and reports, as one JSON line,
 * the taps, whether the second saw the frame, and what a bridge name that is no bridge gives.
 */
import { SnowflockError } from "../../src/errors.ts";
import { closeTap, openBridgedTap } from "../../src/net/tap.ts";
import { read, write } from "../../src/sys/files.ts";

const [bridge, notBridge] = process.argv.slice(2) as [string, string];
const a = openBridgedTap(bridge);
const b = openBridgedTap(bridge);
const frame = new Uint8Array(60);
frame.fill(0xff, 0, 6); // broadcast
frame.set([0x02, 0, 0, 0, 0, 1], 6);
frame.set([0x88, 0xb5], 12); // a local experimental EtherType
frame.set(new TextEncoder().encode("snowflock"), 14);
write(a.fd, frame);
const buffer = new Uint8Array(2048);
let seen = false;
for (let i = 0; i < 200 && !seen; i++) {
  try {
    const n = read(b.fd, buffer);
    seen = n === frame.byteLength && buffer.subarray(0, n).every((x, j) => x === frame[j]);
  } catch {
    await Bun.sleep(10);
  }
}
let refusal: { code: string; message: string } | undefined;
try {
  openBridgedTap(notBridge);
} catch (error) {
  if (error instanceof SnowflockError) refusal = { code: error.code, message: error.render() };
}
console.log(JSON.stringify({ taps: [a.name, b.name], bridges: [a.bridge, b.bridge], seen, refusal }));
closeTap(a);
closeTap(b);
