/**
 * A real agent or memory server in a process of its own, so a test can flood it and read its RSS
 * (/proc/PID/status) without the attacking sockets counting. Usage:
 *   bun test/support/listener-target.ts agent   (LISTENER_TARGET_SECRET: the cluster's secret)
 *   bun test/support/listener-target.ts memory  (serves an image of IMAGE_PAGES pages; page p is filled with p & 0xff)
 * Prints one JSON line saying where it listens, then serves until killed. Timeouts follow
 * SNOWFLOCK_TIMEOUT_SCALE like every snowflock process.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { startAgent } from "../../src/cluster/agent.ts";
import { ClusterContext } from "../../src/cluster/cluster-context.ts";
import { memoryLayout, PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import { startMemoryServer } from "../../src/memory/memory-server.ts";
import { testRunDir } from "./cli.ts";

export const IMAGE_PAGES = 64;

export interface TargetAddress {
  port: number;
  /** The memory server's token, hex. */
  token?: string;
}

if (import.meta.main) {
  const dir = testRunDir();
  process.env.SNOWFLOCK_RUN_DIR = dir;
  if (process.argv[2] === "agent") {
    const host = { name: "h1", namespace: null, address: "127.0.0.1", interface: "lo", mac: "02:73:66:00:00:01", agentPort: 0 };
    const secret = process.env.LISTENER_TARGET_SECRET!;
    const inventory = { version: 1 as const, cluster: "flood", secret, bridge: null, mtu: 1500, hosts: [host] };
    const agent = startAgent({ cluster: new ClusterContext("(in memory)", inventory, host, new Map()), backend: "kvm", maxClones: 4 });
    console.log(JSON.stringify({ port: agent.port } satisfies TargetAddress));
  } else {
    const imagePath = join(dir, "image");
    const image = new Uint8Array(IMAGE_PAGES * PAGE_SIZE);
    for (let p = 0; p < IMAGE_PAGES; p++) image.fill(p & 0xff, p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
    writeFileSync(imagePath, image);
    const layout = memoryLayout(image.byteLength);
    const server = await startMemoryServer({ imagePath, layout, socketPath: join(dir, "pages.sock"), tcpAddress: "127.0.0.1" });
    console.log(JSON.stringify({ port: server.tcp!.port, token: Buffer.from(server.tcp!.token).toString("hex") } satisfies TargetAddress));
  }
  setInterval(() => undefined, 1 << 30);
}
