/**
 * A thin layer over iproute2 for the test hosts: every call is `ip` with an argument array (no
 * shell), and a failure carries ip's own stderr. Nothing here decides what to create; that is
 * test-hosts.ts.
 */
import { readFileSync } from "node:fs";
import { SnowflockError } from "../errors.ts";

export interface IpResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `ip ARGS...` and returns what it printed, whatever its exit status. */
export async function ipRaw(args: string[]): Promise<IpResult> {
  let child: Bun.Subprocess<"ignore", "pipe", "pipe">;
  try {
    child = Bun.spawn(["ip", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  } catch (error) {
    throw new SnowflockError("USAGE", `cannot run ip: ${(error as Error).message}`, "install iproute2 (the `ip` command)");
  }
  const [stdout, stderr, status] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  return { status, stdout, stderr };
}

/** Runs `ip ARGS...`; a non-zero status throws with ip's stderr. */
export async function ip(args: string[]): Promise<string> {
  const result = await ipRaw(args);
  if (result.status !== 0) throw ipError(args, result);
  return result.stdout;
}

export function ipError(args: string[], result: IpResult): SnowflockError {
  const why = result.stderr.trim().split("\n").filter(Boolean).join("; ") || `exit status ${result.status}`;
  const permission = /operation not permitted|permission denied/i.test(why);
  return new SnowflockError(
    permission ? "USAGE" : "INTERNAL",
    `\`ip ${args.join(" ")}\` failed: ${why}`,
    permission ? "test hosts need root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run as root" : undefined,
  );
}

/** `ip -j ...` parsed; empty output (ip prints nothing when there is nothing) is []. */
export async function ipJson<T>(args: string[]): Promise<T[]> {
  const text = (await ip(["-j", ...args])).trim();
  if (text === "") return [];
  return JSON.parse(text) as T[];
}

/** Names of all network namespaces known to `ip netns` (/run/netns). */
export async function listNamespaces(): Promise<string[]> {
  return (await ipJson<{ name: string }>(["netns", "list"])).map((n) => n.name);
}

export interface LinkInfo {
  ifname: string;
  flags: string[];
  mtu: number;
  operstate: string;
  address: string;
  link_type?: string;
}

/** Links of a namespace (null: the namespace this process runs in). */
export async function listLinks(namespace: string | null): Promise<LinkInfo[]> {
  return ipJson<LinkInfo>([...(namespace ? ["-n", namespace] : []), "link", "show"]);
}

/** One link, or undefined when it (or its namespace) does not exist. */
export async function linkInfo(namespace: string | null, name: string): Promise<LinkInfo | undefined> {
  const result = await ipRaw([...(namespace ? ["-n", namespace] : []), "-j", "link", "show", "dev", name]);
  if (result.status !== 0 || result.stdout.trim() === "") return undefined;
  return (JSON.parse(result.stdout) as LinkInfo[])[0];
}

/** IPv4 addresses (with prefix length) of a link inside a namespace. */
export async function linkAddresses(namespace: string, name: string): Promise<string[]> {
  const result = await ipRaw(["-n", namespace, "-j", "-4", "addr", "show", "dev", name]);
  if (result.status !== 0 || result.stdout.trim() === "") return [];
  const links = JSON.parse(result.stdout) as Array<{ addr_info?: Array<{ local: string; prefixlen: number }> }>;
  return links.flatMap((l) => (l.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`));
}

/** PIDs of the processes that run inside a namespace (`ip netns pids`). */
export async function namespacePids(namespace: string): Promise<number[]> {
  const result = await ipRaw(["netns", "pids", namespace]);
  if (result.status !== 0) return [];
  return result.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

/** Whether a process exists and is not a zombie. */
export function processRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** SIGTERM, then SIGKILL for those still there after `graceMs`; returns the pids signalled. */
export async function terminate(pids: number[], graceMs = 2000): Promise<number[]> {
  const signalled: number[] = [];
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGTERM");
      signalled.push(pid);
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + graceMs;
  while (signalled.some(processRunning) && Date.now() < deadline) await Bun.sleep(20);
  for (const pid of signalled.filter(processRunning)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone in between
    }
  }
  const killDeadline = Date.now() + 1000;
  while (signalled.some(processRunning) && Date.now() < killDeadline) await Bun.sleep(20);
  return signalled;
}

/**
 * Whether `address` answers from inside `namespace`: a TCP connection to port 9 (discard) made
 * by a short Bun process started in the namespace. A refused connection counts as reachable (the
 * peer's kernel answered with a reset, so ARP and IP worked both ways); silence or "no route"
 * does not. No ICMP tool is needed, and the packets never leave the namespaces' network.
 */
export async function probeReachable(
  namespace: string,
  address: string,
  timeoutMs = 3000,
): Promise<{ ok: true } | { ok: false; why: string }> {
  const script = `
    const timer = setTimeout(() => { console.error("no answer within ${timeoutMs} ms"); process.exit(2); }, ${timeoutMs});
    try {
      const socket = await Bun.connect({ hostname: ${JSON.stringify(address)}, port: 9, socket: { data() {}, open() {} } });
      socket.end();
      clearTimeout(timer);
      process.exit(0);
    } catch (error) {
      clearTimeout(timer);
      if (error && error.code === "ECONNREFUSED") process.exit(0);
      console.error(String((error && (error.code || error.message)) || error));
      process.exit(1);
    }`;
  // process.execPath is bun, or the compiled snowflock executable, which acts as bun with BUN_BE_BUN=1.
  const child = Bun.spawn(["ip", "netns", "exec", namespace, process.execPath, "-e", script], {
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
    env: { ...process.env, BUN_BE_BUN: "1" },
  });
  const [stderr, status] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  return status === 0 ? { ok: true } : { ok: false, why: stderr.trim().split("\n").pop() || `status ${status}` };
}

/** Whether some process listens on TCP `port` inside `namespace` (`ss -ltn` run there). */
export async function listensInside(namespace: string, port: number): Promise<boolean> {
  const child = Bun.spawn(["ip", "netns", "exec", namespace, "ss", "-H", "-l", "-t", "-n", "sport", "=", `:${port}`], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "ignore",
  });
  const [stdout, status] = await Promise.all([new Response(child.stdout).text(), child.exited]);
  return status === 0 && stdout.trim() !== "";
}
