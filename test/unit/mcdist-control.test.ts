import { describe, expect, test } from "bun:test";
import { CONTROL_OVERHEAD, type ControlHeader, openControl, sealControl } from "../../src/mcdist/control.ts";
import { decodeFrame, encodeFrame, type Frame, FrameType } from "../../src/mcdist/frame.ts";
import { encodeRequest, RequestFlag } from "../../src/mcdist/messages.ts";
import { REPLAY_WINDOW, ReplayWindows } from "../../src/mcdist/replay-window.ts";

const key = Uint8Array.from({ length: 32 }, (_, i) => i * 5 + 2);
const header: ControlHeader = { type: FrameType.REQUEST, family: 77, sequence: 9, object: 12n };
const message = encodeRequest({ flags: RequestFlag.UNICAST, pages: [12, 13], heardFrom: 40 });
const sender = 0x1122334455667788n;

function frameOf(h: ControlHeader, payload: Uint8Array): Frame {
  return { ...h, fragment: 0, fragments: 1, payload };
}

describe("mcdist control frames", () => {
  test("a sealed request opens with the family key, through the wire encoding", () => {
    const payload = sealControl(key, header, sender, message);
    expect(payload.byteLength).toBe(message.byteLength + CONTROL_OVERHEAD);
    const decoded = decodeFrame(encodeFrame(frameOf(header, payload)), 77);
    if (!("frame" in decoded)) throw new Error(`dropped: ${decoded.dropped}`);
    expect(openControl(key, decoded.frame)).toEqual({ sender, message });
  });

  test("untagged, tampered, misplaced or wrongly keyed frames do not open", () => {
    const payload = sealControl(key, header, sender, message);
    expect(openControl(key, frameOf(header, message))).toBeUndefined(); // the old, untagged form
    expect(openControl(key, frameOf(header, new Uint8Array(CONTROL_OVERHEAD)))).toBeUndefined();
    for (const at of [0, 7, 8, payload.byteLength - 17, payload.byteLength - 1]) {
      const bad = payload.slice();
      bad[at]! ^= 1;
      expect(openControl(key, frameOf(header, bad))).toBeUndefined();
    }
    for (const other of [{ type: FrameType.RATE }, { family: 78 }, { sequence: 10 }, { object: 13n }]) {
      expect(openControl(key, frameOf({ ...header, ...other }, payload))).toBeUndefined();
    }
    const otherKey = key.slice();
    otherKey[31]! ^= 0x80;
    expect(openControl(otherKey, frameOf(header, payload))).toBeUndefined();
    expect(openControl(key, { ...frameOf(header, payload), fragments: 2 })).toBeUndefined();
  });
});

describe("replay windows", () => {
  test("each sequence of a sender is accepted once; reordering within the window is fine, older is refused", () => {
    const windows = new ReplayWindows(16);
    expect(windows.accept(1n, 100)).toBe(true);
    expect(windows.accept(1n, 100)).toBe(false);
    expect(windows.accept(1n, 102)).toBe(true);
    expect(windows.accept(1n, 101)).toBe(true); // arrived late, not seen before
    expect(windows.accept(1n, 101)).toBe(false);
    expect(windows.accept(1n, 102)).toBe(false);
    const highest = 102 + REPLAY_WINDOW;
    expect(windows.accept(1n, highest)).toBe(true);
    expect(windows.accept(1n, highest - REPLAY_WINDOW)).toBe(false); // fell out of the window
    expect(windows.accept(1n, highest - REPLAY_WINDOW + 1)).toBe(true); // the oldest it holds, never seen
    expect(windows.accept(1n, highest - REPLAY_WINDOW + 1)).toBe(false);
    expect(windows.accept(2n, 100)).toBe(true); // senders are counted apart
  });

  test("a jump beyond the window forgets what was before it; the oldest sender is evicted beyond the limit", () => {
    const windows = new ReplayWindows(2);
    expect(windows.accept(1n, 5)).toBe(true);
    expect(windows.accept(1n, 5 + 10 * REPLAY_WINDOW)).toBe(true);
    expect(windows.accept(1n, 5 + 10 * REPLAY_WINDOW)).toBe(false);
    expect(windows.accept(1n, 5 + 9 * REPLAY_WINDOW)).toBe(false);
    expect(windows.accept(1n, 4 + 10 * REPLAY_WINDOW)).toBe(true);
    expect(windows.accept(2n, 1)).toBe(true);
    expect(windows.accept(3n, 1)).toBe(true); // evicts sender 1
    expect(windows.accept(2n, 1)).toBe(false);
    expect(windows.accept(1n, 5 + 10 * REPLAY_WINDOW)).toBe(true);
  });
});
