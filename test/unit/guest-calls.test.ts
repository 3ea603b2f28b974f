/**
 * The hypercall front end of the family (src/cluster/guest-calls.ts) against a fake guest RAM of
 * 64 KiB and a recording stand-in for the family (this is a unit test of the front end alone; the
 * real family behind real hypercalls is test/unit/guest-limits.test.ts and the integration tests).
 * Wild pointers fail with SF_EFAULT before the family is asked anything, and nothing is written.
 */
import { describe, expect, test } from "bun:test";
import type { GuestCall } from "../../src/backend/backend.ts";
import { type FamilyCalls, type GuestRam, serveGuestCall } from "../../src/cluster/guest-calls.ts";
import { joinAnswer } from "../../src/cluster/join-answer.ts";
import { ClusterCall, GuestError, JOIN_NONBLOCK, MESSAGE_MAX, RECV_NONBLOCK } from "../../src/guest/hypercalls.ts";

const RAM_BYTES = 64 * 1024;

/** Guest RAM at guest-physical 0..RAM_BYTES; a range is the guest's only if it lies wholly inside. */
function fakeRam(): GuestRam & { bytes: Uint8Array } {
  const bytes = new Uint8Array(RAM_BYTES);
  return {
    bytes,
    guestRange: (address, length) =>
      address >= 0n && length >= 0n && address + length <= BigInt(RAM_BYTES)
        ? bytes.subarray(Number(address), Number(address + length))
        : undefined,
  };
}

/** A family that answers with fixed values and records what it was asked. */
function fakeFamily(inbox: Array<{ from: number; data: Uint8Array }> = [], joinAllWaits = false): FamilyCalls & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    requestTicket: async (wanted) => (asked.push(`requestTicket ${wanted}`), { ticket: 5, granted: 3 }),
    clone: async (ticket, block) => (asked.push(`clone ${ticket} ${block}`), 0n),
    joinable: (ticket) => (asked.push(`joinable ${ticket}`), ticket === 5n ? { clones: 3 } : GuestError.EINVAL),
    join: async (ticket) => (asked.push(`join ${ticket}`), [41, 42, -9]),
    joinAll: async (nonblocking) => {
      asked.push(`joinAll ${nonblocking}`);
      if (nonblocking && joinAllWaits) return GuestError.EAGAIN;
      return [
        { cloneId: 2, status: 0, result: "b".repeat(64) },
        { cloneId: 1, status: 3 },
        { cloneId: 3, status: -9 },
      ];
    },
    kill: async (ticket) => (asked.push(`kill ${ticket}`), 0n),
    send: async (destination, data) => (asked.push(`send ${destination} ${[...data].join(",")}`), BigInt(data.byteLength)),
    receive: async (capacity, nonblocking) => {
      asked.push(`receive ${capacity} ${nonblocking}`);
      const message = inbox[0];
      if (!message) return GuestError.EAGAIN;
      if (BigInt(message.data.byteLength) > capacity) return GuestError.E2BIG;
      return inbox.shift()!;
    },
    checkpoint: async (block) => (asked.push(`checkpoint ${block}`), 1n),
    createClones: async (checkpoint, ticket) => (asked.push(`createClones ${checkpoint} ${ticket}`), 0n),
    releaseCheckpoint: (checkpoint) => (asked.push(`releaseCheckpoint ${checkpoint}`), 0n),
  };
}

const call = (nr: number, ...args: bigint[]): GuestCall => ({ vcpu: 0, nr, args, blockAddress: 0x7000 });
const u64 = (ram: { bytes: Uint8Array }, at: number) => new DataView(ram.bytes.buffer).getBigUint64(at, true);
/** Addresses a guest may pass that it does not own: past the end, straddling it, the top of the address space. */
const WILD = [BigInt(RAM_BYTES), BigInt(RAM_BYTES - 4), 2n ** 64n - 8n, 2n ** 63n];

describe("sf_request_ticket", () => {
  test("writes how many clones the ticket grants and returns its ID", async () => {
    const ram = fakeRam();
    const family = fakeFamily();
    expect(await serveGuestCall(family, ram, call(ClusterCall.REQUEST_TICKET, 4n, 0x100n))).toBe(5n);
    expect(u64(ram, 0x100)).toBe(3n);
    expect(await serveGuestCall(family, ram, call(ClusterCall.REQUEST_TICKET, 4n, 0n))).toBe(5n); // no `granted` asked for
  });

  test("a wild `granted` pointer or no clone wanted fails before the family is asked", async () => {
    for (const [args, error] of [...WILD.map((p) => [[4n, p], GuestError.EFAULT] as const), [[0n, 0x100n], GuestError.EINVAL] as const]) {
      const ram = fakeRam();
      const family = fakeFamily();
      expect(await serveGuestCall(family, ram, call(ClusterCall.REQUEST_TICKET, ...args))).toBe(error);
      expect(family.asked).toEqual([]);
      expect(ram.bytes.every((b) => b === 0)).toBe(true);
    }
  });
});

describe("sf_join_all (the Linux sf tool's join)", () => {
  const text = (ram: { bytes: Uint8Array }, at: number, length: bigint) =>
    new TextDecoder().decode(ram.bytes.subarray(at, at + Number(length)));

  test("writes sf join's answer, clones in ID order with their results, and returns its length", async () => {
    const ram = fakeRam();
    const length = await serveGuestCall(fakeFamily(), ram, call(ClusterCall.JOIN_ALL, 0x1000n, 4096n, 0n));
    expect(text(ram, 0x1000, length)).toBe(`3 1=3 2=0:${"b".repeat(64)} 3=-9`);
  });

  test("the answer leaves the results out when they do not fit (as the Xen agent's does)", () => {
    const ended = Array.from({ length: 20 }, (_, i) => ({ cloneId: i + 1, status: 0, result: "f".repeat(64) }));
    expect(joinAnswer(ended, 4096)).toMatchObject({ withResults: true });
    expect(joinAnswer(ended, 1024)).toEqual({ text: `20${ended.map((e) => ` ${e.cloneId}=0`).join("")}`, withResults: false });
  });

  test("nonblocking while clones run is SF_EAGAIN", async () => {
    const ram = fakeRam();
    const family = fakeFamily([], true);
    expect(await serveGuestCall(family, ram, call(ClusterCall.JOIN_ALL, 0x1000n, 4096n, JOIN_NONBLOCK))).toBe(GuestError.EAGAIN);
    expect(family.asked).toEqual(["joinAll true"]);
  });

  test("a wild or too small buffer fails before anything is joined", async () => {
    for (const [address, capacity, error] of [
      ...WILD.map((p) => [p, 4096n, GuestError.EFAULT] as const),
      [0x1000n, 100n, GuestError.EINVAL] as const,
    ]) {
      const ram = fakeRam();
      const family = fakeFamily();
      expect(await serveGuestCall(family, ram, call(ClusterCall.JOIN_ALL, address, capacity, 0n))).toBe(error);
      expect(family.asked).toEqual([]);
      expect(ram.bytes.every((b) => b === 0)).toBe(true);
    }
  });
});

describe("sf_join", () => {
  test("writes one status per clone, at most `capacity`, and returns how many clones there were", async () => {
    const ram = fakeRam();
    const family = fakeFamily();
    expect(await serveGuestCall(family, ram, call(ClusterCall.JOIN, 5n, 0x200n, 2n))).toBe(3n);
    expect([u64(ram, 0x200), u64(ram, 0x208), u64(ram, 0x210)]).toEqual([41n, 42n, 0n]);
    expect(family.asked).toEqual(["joinable 5", "join 5"]);
  });

  test(
    "statuses that would run past the guest's RAM fail before the join waits; a ticket it cannot join " + "fails as the family says",
    async () => {
      for (const address of [...WILD, BigInt(RAM_BYTES - 16)]) {
        const family = fakeFamily();
        expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.JOIN, 5n, address, 3n))).toBe(GuestError.EFAULT);
        expect(family.asked).toEqual(["joinable 5"]);
      }
      const family = fakeFamily();
      expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.JOIN, 9n, 0x200n, 3n))).toBe(GuestError.EINVAL);
      expect(family.asked).toEqual(["joinable 9"]);
      // A huge capacity is capped; it does not make the range (or the write) larger than the clones.
      expect(await serveGuestCall(fakeFamily(), fakeRam(), call(ClusterCall.JOIN, 5n, BigInt(RAM_BYTES - 24), 2n ** 64n - 1n))).toBe(3n);
    },
  );
});

describe("sf_send and sf_recv", () => {
  test("a message goes out as the bytes at the guest's buffer", async () => {
    const ram = fakeRam();
    ram.bytes.set([7, 8, 9], 0x300);
    const family = fakeFamily();
    expect(await serveGuestCall(family, ram, call(ClusterCall.SEND, 2n, 0x300n, 3n))).toBe(3n);
    expect(family.asked).toEqual(["send 2 7,8,9"]);
  });

  test("a message larger than the limit, or a buffer the guest does not own, is refused unsent", async () => {
    const family = fakeFamily();
    expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.SEND, 2n, 0x300n, BigInt(MESSAGE_MAX) + 1n))).toBe(GuestError.E2BIG);
    for (const address of WILD)
      expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.SEND, 2n, address, 16n))).toBe(GuestError.EFAULT);
    expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.SEND, 2n, 0x300n, 2n ** 64n - 1n))).toBe(GuestError.E2BIG);
    expect(family.asked).toEqual([]);
  });

  test("a received message lands in the guest's buffer and its sender in `sender`", async () => {
    const ram = fakeRam();
    const family = fakeFamily([{ from: 4, data: new Uint8Array([1, 2, 3, 4, 5]) }]);
    expect(await serveGuestCall(family, ram, call(ClusterCall.RECV, 0x400n, 64n, 0x500n, RECV_NONBLOCK))).toBe(5n);
    expect([...ram.bytes.subarray(0x400, 0x406)]).toEqual([1, 2, 3, 4, 5, 0]);
    expect(u64(ram, 0x500)).toBe(4n);
    expect(family.asked).toEqual(["receive 64 true"]);
    expect(await serveGuestCall(family, ram, call(ClusterCall.RECV, 0x400n, 64n, 0n, RECV_NONBLOCK))).toBe(GuestError.EAGAIN);
  });

  test("a wild buffer or sender pointer fails before a message is taken; one too large for the buffer stays", async () => {
    const inbox = [{ from: 1, data: new Uint8Array(100) }];
    const family = fakeFamily(inbox);
    for (const address of WILD)
      expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.RECV, address, 64n, 0n, 0n))).toBe(GuestError.EFAULT);
    for (const sender of WILD)
      expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.RECV, 0x400n, 64n, sender, 0n))).toBe(GuestError.EFAULT);
    expect(family.asked).toEqual([]);
    expect(await serveGuestCall(family, fakeRam(), call(ClusterCall.RECV, 0x400n, 64n, 0n, 0n))).toBe(GuestError.E2BIG);
    expect(inbox).toHaveLength(1);
  });
});

test("clone, kill and the checkpoint calls pass their values through; an unknown call is SF_ENOSYS", async () => {
  const family = fakeFamily();
  const ram = fakeRam();
  expect(await serveGuestCall(family, ram, call(ClusterCall.CLONE, 5n))).toBe(0n);
  expect(await serveGuestCall(family, ram, call(ClusterCall.KILL, 5n))).toBe(0n);
  expect(await serveGuestCall(family, ram, call(ClusterCall.CHECKPOINT_PARENT))).toBe(1n);
  expect(await serveGuestCall(family, ram, call(ClusterCall.CREATE_CLONES, 1n, 5n))).toBe(0n);
  expect(await serveGuestCall(family, ram, call(ClusterCall.RELEASE_CHECKPOINT, 1n))).toBe(0n);
  expect(family.asked).toEqual(["clone 5 28672", "kill 5", "checkpoint 28672", "createClones 1 5", "releaseCheckpoint 1"]);
  expect(await serveGuestCall(family, ram, call(99))).toBe(GuestError.ENOSYS);
});
