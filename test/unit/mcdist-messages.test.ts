import { describe, expect, test } from "bun:test";
import { PAGE_SIZE } from "../../src/guest-memory/layout.ts";
import {
  decodeRate,
  decodeRequest,
  encodeChunkObject,
  encodePageObject,
  encodeRate,
  encodeRequest,
  MAX_REQUEST_PAGES,
  MessageError,
  PAGE_OBJECT_SIZE,
  RequestFlag,
  verifyChunkObject,
  verifyPageObject,
} from "../../src/mcdist/messages.ts";
import { groupAddress, groupMac, checkTransportSpec, formatMac, parseUdpEndpoint } from "../../src/mcdist/transport.ts";

const key = Uint8Array.from({ length: 32 }, (_, i) => i * 3 + 1);
const page = Uint8Array.from({ length: PAGE_SIZE }, (_, i) => (i * 11 + 5) & 0xff);

describe("mcdist page objects", () => {
  test("a tagged page verifies and gives the page back", () => {
    const object = encodePageObject(key, 7, 123, page);
    expect(object.byteLength).toBe(PAGE_OBJECT_SIZE);
    expect(verifyPageObject(key, 7, 123, object)).toEqual(page);
  });

  test("a forged or misplaced page is refused", () => {
    const object = encodePageObject(key, 7, 123, page);
    const flipped = object.slice();
    flipped[100]! ^= 1; // data changed, tag kept
    expect(verifyPageObject(key, 7, 123, flipped)).toBeUndefined();
    const badTag = object.slice();
    badTag[PAGE_SIZE + 3]! ^= 0x80;
    expect(verifyPageObject(key, 7, 123, badTag)).toBeUndefined();
    expect(verifyPageObject(key, 7, 124, object)).toBeUndefined(); // another page's slot
    expect(verifyPageObject(key, 8, 123, object)).toBeUndefined(); // another family
    const otherKey = key.slice();
    otherKey[0]! ^= 1;
    expect(verifyPageObject(otherKey, 7, 123, object)).toBeUndefined();
    expect(verifyPageObject(key, 7, 123, object.subarray(0, PAGE_OBJECT_SIZE - 1))).toBeUndefined();
  });

  test("a descriptor chunk's tag never passes for a page's of the same number and bytes, nor the other way", () => {
    const chunk = encodeChunkObject(key, 7, 123, page);
    expect(verifyChunkObject(key, 7, 123, chunk)).toEqual(page);
    expect(verifyPageObject(key, 7, 123, chunk)).toBeUndefined();
    expect(verifyChunkObject(key, 7, 123, encodePageObject(key, 7, 123, page))).toBeUndefined();
  });
});

describe("mcdist requests", () => {
  test("round trip", () => {
    const request = { flags: RequestFlag.RETRY | RequestFlag.UNICAST, pages: [0, 5, 1023], heardFrom: 1234 };
    expect(decodeRequest(encodeRequest(request), 1024)).toEqual(request);
    // A requester that heard nothing from the group yet says so; heardFrom is a 31-bit group sequence number.
    expect(decodeRequest(encodeRequest({ flags: 0, pages: [9] }), 1024)).toEqual({ flags: 0, pages: [9] });
    expect(decodeRequest(encodeRequest({ ...request, heardFrom: 0x7fffffff }), 1024).heardFrom).toBe(0x7fffffff);
    for (const bad of [-1, 0x80000000, 1.5]) expect(() => encodeRequest({ ...request, heardFrom: bad })).toThrow(RangeError);
  });

  test("bad requests are refused with a reason", () => {
    const reason = (payload: Uint8Array) => {
      try {
        decodeRequest(payload, 1024);
        return "accepted";
      } catch (error) {
        expect(error).toBeInstanceOf(MessageError);
        return (error as Error).message;
      }
    };
    const good = encodeRequest({ flags: 0, pages: [1, 2], heardFrom: 0 });
    expect(reason(good.subarray(0, 1))).toBe("short");
    expect(reason(good.subarray(0, good.byteLength - 1))).toBe("length");
    expect(reason(Uint8Array.from([0x80, ...good.subarray(1)]))).toBe("flags");
    expect(reason(Uint8Array.from([0, 0, 0, 0, 0, 0]))).toBe("count");
    expect(reason(Uint8Array.from([0, MAX_REQUEST_PAGES + 1, ...new Uint8Array(4 + 4 * (MAX_REQUEST_PAGES + 1))]))).toBe("count");
    expect(reason(encodeRequest({ flags: 0, pages: [1024] }))).toBe("range");
    expect(reason(Uint8Array.from([0, 1, 0x80, 0, 0, 0, 0, 0, 0, 1]))).toBe("heard");
    expect(() => encodeRequest({ flags: 0, pages: [] })).toThrow(RangeError);
  });

  test("rates", () => {
    expect(decodeRate(encodeRate(5000))).toBe(5000);
    expect(() => decodeRate(new Uint8Array(4))).toThrow(MessageError);
    expect(() => decodeRate(new Uint8Array(3))).toThrow(MessageError);
  });
});

describe("mcdist transport naming", () => {
  test("groups derive from the family", () => {
    expect(formatMac(groupMac(0x01020304))).toBe("03:73:01:02:03:04");
    expect(groupMac(1)[0]! & 0x03).toBe(0x03); // multicast, locally administered
    expect(groupAddress(0x00011234)).toBe("239.77.18.52");
  });

  test("specs from JSON are checked", () => {
    expect(checkTransportSpec({ kind: "udp", interface: "eth0", address: "10.77.0.11" })).toEqual({
      kind: "udp",
      interface: "eth0",
      address: "10.77.0.11",
      port: 7789,
    });
    expect(checkTransportSpec({ kind: "packet", interface: "eth0" })).toEqual({ kind: "packet", interface: "eth0" });
    expect(() => checkTransportSpec({ kind: "packet", interface: "../etc" })).toThrow(/interface/);
    expect(() => checkTransportSpec({ kind: "udp", interface: "eth0", address: "10.77.0" })).toThrow(/IPv4/);
    expect(() => checkTransportSpec({ kind: "tcp", interface: "eth0" })).toThrow(/kind/);
    expect(parseUdpEndpoint("10.0.0.1:99")).toEqual({ address: "10.0.0.1", port: 99 });
    expect(() => parseUdpEndpoint("10.0.0.1:0")).toThrow();
  });
});
