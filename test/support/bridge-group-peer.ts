/**
 * A test peer in a network namespace (`ip netns exec NS bun bridge-group-peer.ts IF FAMILY`): an
 * mcdist packet transport on IF that joins the family's group. Commands on stdin, JSON lines out:
 *   send N   N frames to the group          count   {"received": frames taken since the last count}
 * At the end of stdin it closes the transport (which removes the bridge entries it added).
 */
import { openTransport } from "../../src/mcdist/transport.ts";

const [iface, familyText] = process.argv.slice(2);
const transport = openTransport({ kind: "packet", interface: iface! }, { family: Number(familyText), mtu: 1500 });
const say = (value: unknown) => console.log(JSON.stringify(value));
say({ ready: true, endpoint: transport.localEndpoint });

const buffer = new Uint8Array(65536);
let text = "";
for await (const chunk of Bun.stdin.stream()) {
  text += new TextDecoder().decode(chunk);
  for (let newline = text.indexOf("\n"); newline >= 0; newline = text.indexOf("\n")) {
    const [command, count] = text.slice(0, newline).split(" ");
    text = text.slice(newline + 1);
    if (command === "send") {
      for (let i = 0; i < Number(count); i++) transport.send("group", new TextEncoder().encode(`frame ${i} `.padEnd(200, "x")));
      say({ sent: Number(count) });
    } else if (command === "count") {
      let received = 0;
      while (transport.receive(buffer) !== undefined) received++;
      say({ received });
    }
  }
}
transport.close();
say({ closed: true });
