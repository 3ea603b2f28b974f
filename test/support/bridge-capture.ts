/**
 * A capture on the test network (`ip netns exec SWITCH bun bridge-capture.ts PORT MAC`): counts the
 * mcdist frames that enter the bridge from PORT with source address MAC, until SIGTERM and a quiet
 * half second after it, then prints `{"frames":N,"bytes":B}` (bytes after the Ethernet header, as
 * the server counts them). It listens for every EtherType: on a bridge port the bridge takes frames
 * before a socket bound to one EtherType would see them; only "all protocols" taps come first.
 */
import { ETHERTYPE_MCDIST } from "../../src/mcdist/frame.ts";
import { SO_RCVBUFFORCE, SOL_SOCKET } from "../../src/sys/constants.ts";
import { openPacketSocket, receiveFrame } from "../../src/sys/packet.ts";
import { setSocketInt } from "../../src/sys/udp.ts";

const [port, mac] = process.argv.slice(2);
const ETH_P_ALL = 0x0003;
const socket = openPacketSocket(port!, ETH_P_ALL);
// A burst of page frames must not overflow the capture itself.
setSocketInt(socket.fd, SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20, "SO_RCVBUFFORCE");
const buffer = new Uint8Array(65536);
const source = mac!.split(":").map((h) => parseInt(h, 16));
let frames = 0;
let bytes = 0;
let stopping = false;
process.on("SIGTERM", () => (stopping = true));
console.log("ready");
/** Reads what is queued; how many of the counted frames that was. */
const drain = (): number => {
  const before = frames;
  for (let got = receiveFrame(socket, buffer); got; got = receiveFrame(socket, buffer)) {
    if (got.protocol === ETHERTYPE_MCDIST && got.source.every((b, i) => b === source[i])) {
      frames++;
      bytes += got.length;
    }
  }
  return frames - before;
};
while (!stopping) {
  drain();
  await Bun.sleep(0);
}
// A frame the server sent as the run ended may still be on its way through the veth and the
// bridge when SIGTERM comes: count on until no such frame came for a while (at most a few seconds).
const QUIET_MS = 500;
const LAST_MS = 5000;
const stoppedAt = performance.now();
for (let quietSince = stoppedAt; performance.now() - quietSince < QUIET_MS && performance.now() - stoppedAt < LAST_MS; await Bun.sleep(5)) {
  if (drain() > 0) quietSince = performance.now();
}
console.log(JSON.stringify({ frames, bytes }));
process.exit(0);
