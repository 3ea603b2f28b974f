/**
 * The multicast side of a clone round whose clones run on other hosts: an mcdist server over the
 * frozen image (and the descriptor), on this host's end of the cluster network, with a fresh
 * family number and key; and how the other hosts are told of it. KVM's rounds and Xen's spread
 * start it the same way.
 */
import { randomBytes } from "node:crypto";
import { formatPageServer } from "../memory/page-server-address.ts";
import { type McdistServer, startMcdistServer } from "../mcdist/server.ts";
import type { RemoteTransport } from "./fork-result.ts";

/** How this host serves memory to clones on other hosts. */
export interface RemoteServing {
  transport: RemoteTransport;
  /** This host's address and interface on the cluster network, and its MTU. */
  address: string;
  interface: string;
  mtu: number;
}

export interface FamilyMulticast {
  server: McdistServer;
  family: number;
  key: Uint8Array;
  mtu: number;
}

/** An mcdist server for the image `imageFd` (`size` bytes) over `remote`'s transport, which is packet or udp. */
export async function startFamilyMulticast(
  imageFd: number,
  size: number,
  remote: RemoteServing & { transport: "packet" | "udp" },
  descriptor?: Uint8Array,
): Promise<FamilyMulticast> {
  const family = randomBytes(4).readUInt32BE(0);
  const key = new Uint8Array(randomBytes(32));
  const transport =
    remote.transport === "packet"
      ? { kind: "packet" as const, interface: remote.interface }
      : { kind: "udp" as const, interface: remote.interface, address: remote.address };
  const server = await startMcdistServer({ imageFd, size, family, key, transport, mtu: remote.mtu, descriptor });
  return { server, family, key, mtu: remote.mtu };
}

/** What a clone order tells the other hosts of this memory (formatPageServer's text form; each adds its own end). */
export function multicastMemory(multicast: FamilyMulticast): string {
  return formatPageServer({
    kind: "mcdist",
    server: multicast.server.endpoint,
    family: multicast.family,
    key: multicast.key,
    mtu: multicast.mtu,
  });
}
