/**
 * Drives mcdist test peers (mcdist-peer.ts) from a test: each runs in a test host's namespace and
 * speaks JSON lines on stdout, commands on stdin.
 */
import { afterAll, beforeAll } from "bun:test";
import type { Inventory } from "../../src/cluster/inventory.ts";
import { createTestHosts, destroyTestHosts } from "../../src/cluster/test-hosts.ts";
import type { TransportSpec } from "../../src/mcdist/transport.ts";
import type { PeerConfig } from "./mcdist-peer.ts";
import { within } from "./time.ts";

const PEER = new URL("./mcdist-peer.ts", import.meta.url).pathname;

// biome-ignore lint/suspicious/noExplicitAny: events of every kind from the peer processes, read field by field by each test
export type PeerEvent = Record<string, any>;

export class Peer {
  private readonly decoder = new TextDecoder();
  private readonly reader;
  private text = "";
  constructor(readonly process: Bun.Subprocess<"pipe", "pipe", "pipe">) {
    this.reader = process.stdout.getReader();
  }

  /** The next JSON line the peer prints (fails on EOF or after `ms`). */
  async next(ms = 20_000): Promise<PeerEvent> {
    const deadline = Date.now() + ms;
    for (;;) {
      const newline = this.text.indexOf("\n");
      if (newline >= 0) {
        const line = this.text.slice(0, newline);
        this.text = this.text.slice(newline + 1);
        const event = JSON.parse(line) as PeerEvent;
        if (event.fatal) throw new Error(`peer failed: ${event.fatal}`);
        return event;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("peer said nothing in time");
      const read = await Promise.race([this.reader.read(), Bun.sleep(left).then(() => undefined)]);
      if (read === undefined) continue;
      if (read.done) throw new Error(`peer ended: ${await new Response(this.process.stderr).text()}`);
      this.text += this.decoder.decode(read.value, { stream: true });
    }
  }

  say(line: string): void {
    this.process.stdin.write(`${line}\n`);
    this.process.stdin.flush();
  }

  end(): void {
    this.process.stdin.end();
  }
}

/** Starts peers in the hosts of one inventory; kill() ends every one still running. */
export class PeerHosts {
  private readonly peers: Peer[] = [];
  constructor(private readonly inventory: () => Inventory) {}

  spawn(host: number, mode: string, config: PeerConfig): Peer {
    const namespace = this.inventory().hosts[host - 1]!.namespace!;
    const child = Bun.spawn(["ip", "netns", "exec", namespace, process.execPath, PEER, mode, JSON.stringify(config)], {
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
    });
    const peer = new Peer(child);
    this.peers.push(peer);
    return peer;
  }

  /** The transport of `kind` on host `host`'s eth0. */
  spec(kind: TransportSpec["kind"], host: number): TransportSpec {
    return kind === "packet"
      ? { kind, interface: "eth0" }
      : { kind, interface: "eth0", address: this.inventory().hosts[host - 1]!.address };
  }

  kill(): void {
    for (const p of this.peers) p.process.kill(9);
  }
}

/** In a describe block: four test hosts made before its tests and removed after, with their peers. */
export function usePeerHosts(prefix: string, mtu: number): PeerHosts {
  let inventory: Inventory | undefined;
  const hosts = new PeerHosts(() => inventory!);
  beforeAll(async () => {
    inventory = await createTestHosts({ hosts: 4, prefix, mtu });
  }, within(60_000));
  afterAll(async () => {
    hosts.kill();
    await destroyTestHosts(prefix, { inventoryPath: null }).catch(() => {});
  }, within(60_000));
  return hosts;
}
