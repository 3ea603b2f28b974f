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
 *           without sch_netem); `burnMs` and `bufferBytes` make it slow like a clone on a busy host.
 *   forge   sends PAGE frames for `pages` with the right family and a valid CRC but garbage
 *           contents and tags, to the family's group, until stdin closes; prints {ready} first.
 *   keyless a peer without the family key: until stdin closes it asks the server for `pages` and the
 *           descriptor's `chunks` (unicast flag: answer me) and reports RATE=1, in every form it can
 *           make (the old wire version, untagged, a made-up tag, a tag keyed by a key of its own); it listens for what comes
 *           back and prints {sent, pagesReceived, chunksReceived}.
 */
import { McdistClient } from "../../src/mcdist/client.ts";
import { newSender, sealControl } from "../../src/mcdist/control.ts";
import { decodeFrame, encodeFrame, type Frame, fragment, FRAME_VERSION, FrameType } from "../../src/mcdist/frame.ts";
import { encodeRate, encodeRequest, MAX_REQUEST_PAGES, PAGE_OBJECT_SIZE, RequestFlag } from "../../src/mcdist/messages.ts";
import { startMcdistServer } from "../../src/mcdist/server.ts";
import type { McdistServerEndpoint } from "../../src/mcdist/server-protocol.ts";
import { openTransport, type Transport, type TransportSpec } from "../../src/mcdist/transport.ts";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
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
  /** server: also serve a descriptor of this many bytes (patternBytes) */
  descriptorBytes?: number;
  /** client */
  server?: McdistServerEndpoint;
  pageCount?: number;
  pages?: number[];
  laterPages?: number[];
  /** keyless: descriptor chunks to ask for */
  chunks?: number[];
  batch?: number;
  timeoutMs?: number;
  loss?: number;
  rate?: number | "measured";
  /** client: CPU time burnt after each fetch (ms), like a guest running between faults; frames wait meanwhile. */
  burnMs?: number;
  /** client: socket buffer size (bytes): a small one overflows while the client is busy, like a descheduled clone's. */
  bufferBytes?: number;
}

/** The image's contents: every 32-bit word depends on its page and position. */
export function patternPage(page: number): Uint8Array {
  const words = new Uint32Array(PAGE_SIZE / 4);
  for (let j = 0; j < words.length; j++) words[j] = Math.imul(page + 1, 0x9e3779b1) ^ Math.imul(j + 7, 0x85ebca6b);
  return new Uint8Array(words.buffer);
}

/** A descriptor's stand-in: bytes that depend on their offset. */
export function patternBytes(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 131 + (i >>> 9)) & 0xff);
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
        const length = inner.receive(buffer);
        if (length === undefined || random() >= loss) return length;
        lost++;
      }
    },
    sender: () => inner.sender(),
    // Frames lost here are lost on the way, which the kernel does not see: it tells of its own drops.
    framesDropped: () => inner.framesDropped(),
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
  const descriptor = config.descriptorBytes ? patternBytes(config.descriptorBytes) : undefined;
  const running = await startMcdistServer({
    imageFd: fd,
    size,
    family: config.family,
    key: hex(config.keyHex),
    transport: config.transport,
    mtu: config.mtu,
    descriptor,
  });
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
  const inner = openTransport(config.transport, { family: config.family, mtu: config.mtu, bufferBytes: config.bufferBytes });
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
    for (const until = performance.now() + (config.burnMs ?? 0); performance.now() < until; ) {}
  }
  const elapsedMs = performance.now() - started;
  const missing = pages.filter((p) => !got.has(p) && !extra.has(p)).length;
  emit({
    done: true,
    pages: pages.length,
    fetched: got.size,
    prefetched: pages.filter((p) => extra.has(p) && !got.has(p)).length,
    missing,
    mismatches,
    elapsedMs,
    fetches,
    lost: lossyTransport?.lost() ?? 0,
    stats: mcdist.stats(),
  });
  if ((await nextLine()) !== "fetch") return;
  const later = performance.now();
  try {
    const contents = mcdist.fetch(config.laterPages!);
    emit({
      ok: true,
      mismatches: contents.filter((data, k) => !data.every((b, i) => b === patternPage(config.laterPages![k]!)[i])).length,
    });
  } catch (error) {
    emit({
      error: (error as Error).message,
      code: error instanceof SnowflockError ? error.code : undefined,
      elapsedMs: performance.now() - later,
    });
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

/** A frame in wire `version` (with its CRC): what a peer without the key can always make. */
function encodeVersioned(frame: Frame, version: number): Uint8Array {
  const bytes = encodeFrame(frame);
  const view = new DataView(bytes.buffer);
  view.setUint8(2, version);
  view.setUint32(28, 0);
  view.setUint32(28, Bun.hash.crc32(bytes));
  return bytes;
}

async function keyless(config: PeerConfig): Promise<void> {
  const transport = openTransport(config.transport, { family: config.family, mtu: config.mtu });
  const server = config.server!.address;
  const wantedPages = new Set(config.pages ?? []);
  const messages: Array<[FrameType, Uint8Array]> = [[FrameType.RATE, encodeRate(1)]];
  const pages = config.pages ?? [];
  for (let i = 0; i < pages.length; i += MAX_REQUEST_PAGES)
    messages.push([
      FrameType.REQUEST,
      encodeRequest({ flags: RequestFlag.UNICAST | RequestFlag.RETRY, pages: pages.slice(i, i + MAX_REQUEST_PAGES) }),
    ]);
  if (config.chunks?.length)
    messages.push([
      FrameType.REQUEST,
      encodeRequest({ flags: RequestFlag.DESCRIPTOR | RequestFlag.UNICAST | RequestFlag.RETRY, pages: config.chunks }),
    ]);
  const madeUpTag = (message: Uint8Array) => {
    const out = crypto.getRandomValues(new Uint8Array(8 + message.byteLength + 16));
    out.set(message, 8);
    return out;
  };
  const ownKey = crypto.getRandomValues(new Uint8Array(32));
  const sender = newSender();
  const buffer = new Uint8Array(65536);
  let stop = false;
  let sequence = 0;
  const counts = { sent: 0, pagesReceived: 0, chunksReceived: 0 };
  nextLine().then(() => (stop = true));
  emit({ ready: true });
  while (!stop) {
    for (const [type, message] of messages) {
      const object = type === FrameType.REQUEST ? BigInt(new DataView(message.buffer).getUint32(2)) : 0n;
      for (const form of ["old version", "untagged", "made-up tag", "own key"] as const) {
        sequence = (sequence + 1) >>> 0;
        const header = { type, family: config.family, sequence, object };
        const payload =
          form === "own key" ? sealControl(ownKey, header, sender, message) : form === "made-up tag" ? madeUpTag(message) : message;
        transport.send(
          server,
          encodeVersioned({ ...header, fragment: 0, fragments: 1, payload }, form === "old version" ? 1 : FRAME_VERSION),
        );
        counts.sent++;
      }
    }
    for (let length = transport.receive(buffer); length !== undefined; length = transport.receive(buffer)) {
      const decoded = decodeFrame(buffer.subarray(0, length), config.family);
      if ("dropped" in decoded) continue;
      if (decoded.frame.type === FrameType.DESCRIPTOR) counts.chunksReceived++;
      if (decoded.frame.type === FrameType.PAGE && wantedPages.has(Number(decoded.frame.object))) counts.pagesReceived++;
    }
    await Bun.sleep(20);
  }
  transport.close();
  emit(counts);
}

const [mode, configText] = process.argv.slice(2);
const config = JSON.parse(configText!) as PeerConfig;
try {
  if (mode === "server") await server(config);
  else if (mode === "client") await client(config);
  else if (mode === "forge") await forge(config);
  else if (mode === "keyless") await keyless(config);
  else throw new Error(`unknown mode ${mode}`);
} catch (error) {
  emit({ fatal: (error as Error).message });
  process.exit(1);
}
process.exit(0);
