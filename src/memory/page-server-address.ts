/**
 * Where a clone's memtap finds its memory server: a Unix socket on the same host, or TCP on the
 * parent's host with the server's token. It travels as one string (a process argument, a field of
 * an agent's clone order), so it has a strict text form: `unix:PATH` or `tcp:ADDRESS:PORT:TOKEN`.
 */
import { SnowflockError } from "../errors.ts";
import { isIpv4 } from "../net/ipv4.ts";
import { TOKEN_BYTES } from "./page-protocol.ts";

export type PageServerAddress = { kind: "unix"; path: string } | { kind: "tcp"; address: string; port: number; token: Uint8Array };

export function formatPageServer(server: PageServerAddress): string {
  return server.kind === "unix" ? `unix:${server.path}` : `tcp:${server.address}:${server.port}:${Buffer.from(server.token).toString("hex")}`;
}

/** Where a human reads it: never shows the token. */
export function describePageServer(server: PageServerAddress): string {
  return server.kind === "unix" ? server.path : `${server.address}:${server.port}`;
}

export function parsePageServer(text: string): PageServerAddress {
  const bad = () => new SnowflockError("MEMORY", `bad memory-server address '${text.replace(/:[0-9a-f]{64}$/, ":…")}'`, "expected unix:PATH or tcp:ADDRESS:PORT:TOKEN");
  if (text.startsWith("unix:") && text.length > 5) return { kind: "unix", path: text.slice(5) };
  const tcp = /^tcp:([0-9.]+):(\d{1,5}):([0-9a-f]+)$/.exec(text);
  if (!tcp) throw bad();
  const [, address = "", portText = "", tokenHex = ""] = tcp;
  const port = Number(portText);
  if (!isIpv4(address) || port < 1 || port > 65535 || tokenHex.length !== TOKEN_BYTES * 2) throw bad();
  return { kind: "tcp", address, port, token: new Uint8Array(Buffer.from(tokenHex, "hex")) };
}
