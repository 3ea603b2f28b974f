/**
 * A forger on the test network (`ip netns exec NS bun mcdist-forger.ts IF SECONDS`): it watches
 * mcdist PAGE frames, learns the family from them, and answers each with a forged copy — same
 * family and page, a valid CRC, contents and tag of its own — plus corrupted and garbage frames,
 * and asks the frame's sender (the family's server) for that page to be sent to it alone and to
 * slow down to 1 page/s, in untagged frames as a peer without the family key must; until SECONDS
 * have passed. Prints how many frames it forged.
 */
import { decodeFrame, encodeFrame, ETHERTYPE_MCDIST, FRAME_HEADER_SIZE, FrameType } from "../../src/mcdist/frame.ts";
import { readFileSync } from "node:fs";
import { encodeRequest, RequestFlag } from "../../src/mcdist/messages.ts";
import { formatMac, groupMac } from "../../src/mcdist/transport.ts";
import { openPacketSocket, receiveFrame, sendFrame } from "../../src/sys/packet.ts";

const [iface, secondsText] = process.argv.slice(2);
const socket = openPacketSocket(iface!, ETHERTYPE_MCDIST);
const buffer = new Uint8Array(65536);
const deadline = Date.now() + Number(secondsText) * 1000;
const ownMac = readFileSync(`/sys/class/net/${iface}/address`, "utf8").trim();
let forged = 0;
console.log("ready");
while (Date.now() < deadline) {
  const got = receiveFrame(socket, buffer);
  if (!got) {
    await Bun.sleep(1);
    continue;
  }
  const bytes = buffer.subarray(0, got.length);
  if (bytes.byteLength < FRAME_HEADER_SIZE) continue;
  const family = new DataView(bytes.buffer, bytes.byteOffset).getUint32(4);
  const decoded = decodeFrame(bytes, family);
  if ("dropped" in decoded || decoded.frame.type !== FrameType.PAGE) continue;
  const { frame } = decoded;
  const payload = crypto.getRandomValues(new Uint8Array(frame.payload.byteLength));
  const group = groupMac(family);
  sendFrame(socket, group, encodeFrame({ ...frame, sequence: (frame.sequence + 1) >>> 0, payload }));
  const corrupted = encodeFrame({ ...frame, sequence: (frame.sequence + 2) >>> 0, payload });
  corrupted[FRAME_HEADER_SIZE]! ^= 0xff;
  sendFrame(socket, group, corrupted);
  sendFrame(socket, group, new TextEncoder().encode("not an mcdist frame"));
  forged++;
  // The socket sees its own forgeries go out too: only the real sender is asked.
  if (formatMac(got.source) === ownMac) continue;
  const ask = encodeRequest({ flags: RequestFlag.UNICAST | RequestFlag.RETRY, pages: [Number(frame.object)] });
  sendFrame(socket, got.source, encodeFrame({ ...frame, type: FrameType.REQUEST, fragment: 0, fragments: 1, payload: ask }));
  sendFrame(
    socket,
    got.source,
    encodeFrame({ ...frame, type: FrameType.RATE, object: 0n, fragment: 0, fragments: 1, payload: Uint8Array.of(0, 0, 0, 1) }),
  );
}
console.log(`forged ${forged}`);
