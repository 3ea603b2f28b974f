/**
 * A capture on the test network (`ip netns exec SWITCH bun bridge-capture.ts PORT MAC`): counts the
 * mcdist frames that enter the bridge from PORT with source address MAC, until SIGTERM, then prints
 * `{"frames":N,"bytes":B}` (bytes after the Ethernet header, as the server counts them). It listens
 * for every EtherType: on a bridge port the bridge takes frames before a socket bound to one
 * EtherType would see them; only "all protocols" taps come first.
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
const drain = () => {
  for (let got = receiveFrame(socket, buffer); got; got = receiveFrame(socket, buffer)) {
    if (got.protocol === ETHERTYPE_MCDIST && got.source.every((b, i) => b === source[i])) {
      frames++;
      bytes += got.length;
    }
  }
};
while (!stopping) {
  drain();
  await Bun.sleep(0);
}
drain();
console.log(JSON.stringify({ frames, bytes }));
process.exit(0);
