/**
 * A test peer run inside a network namespace (`ip netns exec NS bun packet-peer.ts ...`): it
 * sends or receives mcdist frames on a real AF_PACKET socket.
 *   send IF FAMILY      sends a page in fragments, then frames to drop (other family, corrupted, garbage)
 *   recv IF FAMILY N    prints one JSON line per frame (decoded or dropped) until N frames or 5 s
 */
import { decodeFrame, encodeFrame, ETHERTYPE_MCDIST, fragment, FrameType } from "../../src/mcdist/frame.ts";
import { openPacketSocket, receiveFrame, sendFrame } from "../../src/sys/packet.ts";
import { TEST_PAGE } from "./packet-page.ts";

const [mode, iface, familyText, countText] = process.argv.slice(2);
const family = Number(familyText);
const socket = openPacketSocket(iface!, ETHERTYPE_MCDIST);
const MULTICAST = new Uint8Array([0x01, 0x00, 0x5e, 0x53, 0x46, 0x01]);

if (mode === "send") {
  for (const frame of fragment(FrameType.PAGE, family, 1, 77n, TEST_PAGE, 1500)) sendFrame(socket, MULTICAST, encodeFrame(frame));
  sendFrame(
    socket,
    MULTICAST,
    encodeFrame({
      type: FrameType.PAGE,
      family: family + 1,
      sequence: 2,
      object: 77n,
      fragment: 0,
      fragments: 1,
      payload: new Uint8Array(16),
    }),
  );
  const corrupted = encodeFrame({
    type: FrameType.PAGE,
    family,
    sequence: 3,
    object: 78n,
    fragment: 0,
    fragments: 1,
    payload: new Uint8Array(64),
  });
  corrupted[40]! ^= 1;
  sendFrame(socket, MULTICAST, corrupted);
  sendFrame(socket, MULTICAST, new TextEncoder().encode("definitely not an mcdist frame, just some bytes"));
} else {
  const buffer = new Uint8Array(65536);
  const deadline = Date.now() + 5000;
  let seen = 0;
  console.log(JSON.stringify({ ready: true }));
  while (seen < Number(countText) && Date.now() < deadline) {
    const got = receiveFrame(socket, buffer);
    if (!got) {
      await Bun.sleep(2);
      continue;
    }
    seen++;
    const result = decodeFrame(buffer.subarray(0, got.length), family);
    if ("dropped" in result) console.log(JSON.stringify({ dropped: result.dropped }));
    else
      console.log(
        JSON.stringify({
          object: String(result.frame.object),
          fragment: result.frame.fragment,
          fragments: result.frame.fragments,
          payload: Buffer.from(result.frame.payload).toString("base64"),
        }),
      );
  }
}
