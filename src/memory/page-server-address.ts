/**
 * Where a clone's memtap finds its pages: the parent's frozen image on the same host (read
 * directly), a memory server on a Unix socket on the same host, TCP on the parent's host with the
 * server's token, or the family's mcdist server (multicast; its family number, page key and MTU;
 * the clone adds its own transport end). It travels as one string (a field of an agent's clone
 * order, of a clone's launch record, of memtap's start message — never a process argument: it may
 * hold a secret), so it has a strict text form: `image:PATH`, `unix:PATH`,
 * `tcp:ADDRESS:PORT:TOKEN` or `mcdist:BASE64URL(JSON)`.
 */
import { SnowflockError } from "../errors.ts";
import { isIpv4 } from "../net/ipv4.ts";
import { TOKEN_BYTES } from "./page-protocol.ts";
import type { McdistServerEndpoint } from "../mcdist/server-protocol.ts";
import { checkTransportSpec, type TransportSpec } from "../mcdist/transport.ts";

export interface McdistAddress {
  kind: "mcdist";
  server: McdistServerEndpoint;
  family: number;
  key: Uint8Array;
  mtu: number;
  /** This clone's end (its host's interface); filled in by the clone, not sent. */
  transport?: TransportSpec;
}

/** A server that answers each client on its own connection. */
export type UnicastAddress = { kind: "unix"; path: string } | { kind: "tcp"; address: string; port: number; token: Uint8Array };

/** The parent's frozen image itself (/proc/PID/fd/N), for a clone on the parent's host (image-source.ts). */
export interface ImageAddress {
  kind: "image";
  path: string;
}

export type PageServerAddress = ImageAddress | UnicastAddress | McdistAddress;

export function formatPageServer(server: PageServerAddress): string {
  if (server.kind === "image") return `image:${server.path}`;
  if (server.kind === "unix") return `unix:${server.path}`;
  if (server.kind === "tcp") return `tcp:${server.address}:${server.port}:${Buffer.from(server.token).toString("hex")}`;
  const json = {
    server: server.server,
    family: server.family,
    key: Buffer.from(server.key).toString("hex"),
    mtu: server.mtu,
    transport: server.transport,
  };
  return `mcdist:${Buffer.from(JSON.stringify(json)).toString("base64url")}`;
}

/** Where a human reads it: never shows a token or key. */
export function describePageServer(server: PageServerAddress): string {
  if (server.kind === "image" || server.kind === "unix") return server.path;
  if (server.kind === "tcp") return `${server.address}:${server.port}`;
  return `mcdist ${server.server.kind} ${server.server.address} (family ${server.family})`;
}

function parseMcdist(encoded: string, bad: () => SnowflockError): McdistAddress {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8"));
  } catch {
    throw bad();
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw bad();
  return checkMcdist(value as Record<string, unknown>, bad);
}

function checkMcdist(value: Record<string, unknown>, bad: () => SnowflockError): McdistAddress {
  const server = value.server as Record<string, unknown> | undefined;
  const { family, key, mtu } = value;
  if (
    typeof server !== "object" ||
    server === null ||
    (server.kind !== "packet" && server.kind !== "udp") ||
    typeof server.address !== "string"
  )
    throw bad();
  if (typeof family !== "number" || !Number.isInteger(family) || family < 0 || family > 0xffffffff) throw bad();
  if (typeof key !== "string" || !/^[0-9a-f]{64}$/.test(key)) throw bad();
  if (typeof mtu !== "number" || !Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw bad();
  return {
    kind: "mcdist",
    server: { kind: server.kind, address: server.address },
    family,
    key: new Uint8Array(Buffer.from(key, "hex")),
    mtu,
    transport: value.transport === undefined ? undefined : checkTransportSpec(value.transport),
  };
}

export function parsePageServer(text: string): PageServerAddress {
  const bad = () =>
    new SnowflockError(
      "MEMORY",
      `bad memory-server address '${text.replace(/:[0-9a-f]{64}$/, ":…").slice(0, 80)}'`,
      "expected image:PATH, unix:PATH, tcp:ADDRESS:PORT:TOKEN or mcdist:…",
    );
  if (text.startsWith("image:") && text.length > 6) return { kind: "image", path: text.slice(6) };
  if (text.startsWith("unix:") && text.length > 5) return { kind: "unix", path: text.slice(5) };
  if (text.startsWith("mcdist:")) return parseMcdist(text.slice(7), bad);
  const tcp = /^tcp:([0-9.]+):(\d{1,5}):([0-9a-f]+)$/.exec(text);
  if (!tcp) throw bad();
  const [, address = "", portText = "", tokenHex = ""] = tcp;
  const port = Number(portText);
  if (!isIpv4(address) || port < 1 || port > 65535 || tokenHex.length !== TOKEN_BYTES * 2) throw bad();
  return { kind: "tcp", address, port, token: new Uint8Array(Buffer.from(tokenHex, "hex")) };
}
