/**
 * A test peer for mcdist, run inside a test host's network namespace
 * (`ip netns exec NS bun mcdist-peer.ts MODE CONFIG-JSON`). It talks JSON lines: one per event on
 * stdout, commands on stdin.
 *   server  serves a memfd image filled with patternPage(); prints {ready, endpoint};
 *           stdin "stats" prints {stats}; stdin EOF closes it.
 *   client  prints {ready}; on "go" fetches `pages` in batches the way memtap would (skipping pages
 *           that already arrived as multicast prefetch), checks every page against the pattern and
 *           prints {done, ...}; then on "fetch" fetches `laterPages` once and prints {ok} or {error}.
 *           `loss` drops that fraction of frames in both directions (test-only, for kernels
 *           without sch_netem).
 *   forge   sends PAGE frames for `pages` with the right family and a valid CRC but garbage
 *           contents and tags, to the family's group, until stdin closes; prints {ready} first.
 */
import { McdistClient } from "../../src/mcdist/client.ts";
import { encodeFrame, fragment, FrameType } from "../../src/mcdist/frame.ts";
import { PAGE_OBJECT_SIZE } from "../../src/mcdist/messages.ts";
import { startMcdistServer } from "../../src/mcdist/server.ts";
import type { McdistServerEndpoint } from "../../src/mcdist/server-protocol.ts";
import { openTransport, type Transport, type TransportSpec } from "../../src/mcdist/transport.ts";
import { PAGE_SIZE } from "../../src/memory/layout.ts";
import { SnowflockError } from "../../src/errors.ts";
import { MFD_CLOEXEC } from "../../src/sys/constants.ts";
import { memfdCreate, pwrite } from "../../src/sys/files.ts";

export interface PeerConfig {
  transport: TransportSpec;
  family: number;
  keyHex: string;
  mtu: number;
  /** server */
  size?: number;
  /** client */
  server?: McdistServerEndpoint;
  pageCount?: number;
  pages?: number[];
  laterPages?: number[];
  batch?: number;
  timeoutMs?: number;
  loss?: number;
  rate?: number;
}

/** The image's contents: every 32-bit word depends on its page and position. */
export function patternPage(page: number): Uint8Array {
  const words = new Uint32Array(PAGE_SIZE / 4);
  for (let j = 0; j < words.length; j++) words[j] = Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(j + 7, 0x85ebca6b);
  return new Uint8Array(words.buffer);
}

function emit(event: object): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

const lines = console[Symbol.asyncIterator]();
async function nextLine(): Promise<string | undefined> {
  const { value, done } = await lines.next();
  return done ? undefined : String(value).trim();
}

const hex = (text: string) => Uint8Array.from(text.match(/../g)!, (h) => parseInt(h, 16));

/** A deterministic RNG (xorshift32) so a lossy run can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

function lossy(inner: Transport, loss: number, seed: number): Transport & { lost: () => number } {
  const random = rng(seed);
  let lost = 0;
  return {
    kind: inner.kind,
    fd: inner.fd,
    localEndpoint: inner.localEndpoint,
    maxFrame: inner.maxFrame,
    send(to, bytes) {
      if (random() < loss) lost++;
      else inner.send(to, bytes);
    },
    receive(buffer) {
      for (;;) {
        const got = inner.receive(buffer);
        if (got === undefined || random() >= loss) return got;
        lost++;
      }
    },
    close: () => inner.close(),
    lost: () => lost,
  };
}

async function server(config: PeerConfig): Promise<void> {
  const size = config.size!;
  const fd = memfdCreate("mcdist-test-image", MFD_CLOEXEC);
  const image = new Uint8Array(size);
  for (let page = 0; page < size / PAGE_SIZE; page++) image.set(patternPage(page), page * PAGE_SIZE);
  pwrite(fd, image, 0);
  const running = await startMcdistServer({ imageFd: fd, size, family: config.family, key: hex(config.keyHex), transport: config.transport, mtu: config.mtu });
  emit({ ready: true, endpoint: running.endpoint });
  running.failed.then((error) => emit({ failed: error.message }));
  for (let line = await nextLine(); line !== undefined; line = await nextLine()) {
    if (line === "stats") emit({ stats: running.stats() });
  }
  await running.close();
}

async function client(config: PeerConfig): Promise<void> {
  const extra = new Set<number>();
  let mismatches = 0;
  const check = (page: number, data: Uint8Array) => {
    const expected = patternPage(page);
    if (data.byteLength !== PAGE_SIZE || !data.every((b, i) => b === expected[i])) mismatches++;
  };
  const inner = openTransport(config.transport, { family: config.family, mtu: config.mtu });
  const lossyTransport = config.loss ? lossy(inner, config.loss, config.family ^ inner.fd) : undefined;
  const transport = lossyTransport ?? inner;
  const mcdist = McdistClient.open({
    transport,
    server: config.server!,
    family: config.family,
    key: hex(config.keyHex),
    pageCount: config.pageCount!,
    mtu: config.mtu,
    timeoutMs: config.timeoutMs ?? 5000,
    wakeFd: -1,
    onExtraPage: (page, data) => {
      check(page, data);
      extra.add(page);
    },
    ...(config.rate ? { ratePagesPerSecond: config.rate } : {}),
  });
  emit({ ready: true });
  if ((await nextLine()) !== "go") return;
  const pages = config.pages ?? [];
  const got = new Set<number>();
  const started = performance.now();
  let fetches = 0;
  for (let i = 0; i < pages.length; i += config.batch ?? 32) {
    // memtap never faults on a page that is already installed: prefetched pages are skipped.
    mcdist.drain();
    const batch = pages.slice(i, i + (config.batch ?? 32)).filter((p) => !extra.has(p));
    if (batch.length === 0) continue;
    const contents = mcdist.fetch(batch);
    fetches++;
    batch.forEach((page, k) => {
      check(page, contents[k]!);
      got.add(page);
    });
  }
  const elapsedMs = performance.now() - started;
  const missing = pages.filter((p) => !got.has(p) && !extra.has(p)).length;
  emit({ done: true, pages: pages.length, fetched: got.size, prefetched: pages.filter((p) => extra.has(p) && !got.has(p)).length, missing, mismatches, elapsedMs, fetches, lost: lossyTransport?.lost() ?? 0, stats: mcdist.stats() });
  if ((await nextLine()) !== "fetch") return;
  const later = performance.now();
  try {
    const contents = mcdist.fetch(config.laterPages!);
    emit({ ok: true, mismatches: contents.filter((data, k) => !data.every((b, i) => b === patternPage(config.laterPages![k]!)[i])).length });
  } catch (error) {
    emit({ error: (error as Error).message, code: error instanceof SnowflockError ? error.code : undefined, elapsedMs: performance.now() - later });
  }
  mcdist.close();
}

async function forge(config: PeerConfig): Promise<void> {
  const transport = openTransport(config.transport, { family: config.family, mtu: config.mtu });
  const random = rng(config.family);
  let stop = false;
  let sent = 0;
  nextLine().then(() => (stop = true));
  emit({ ready: true });
  while (!stop) {
    for (const page of config.pages ?? []) {
      const object = Uint8Array.from({ length: PAGE_OBJECT_SIZE }, () => (random() * 256) | 0);
      for (const frame of fragment(FrameType.PAGE, config.family, (random() * 2 ** 32) >>> 0, BigInt(page), object, transport.maxFrame)) {
        transport.send("group", encodeFrame(frame));
        sent++;
      }
    }
    await Bun.sleep(5);
  }
  transport.close();
  emit({ sent });
}

const [mode, configText] = process.argv.slice(2);
const config = JSON.parse(configText!) as PeerConfig;
try {
  if (mode === "server") await server(config);
  else if (mode === "client") await client(config);
  else if (mode === "forge") await forge(config);
  else throw new Error(`unknown mode ${mode}`);
} catch (error) {
  emit({ fatal: (error as Error).message });
  process.exit(1);
}
process.exit(0);
