import { describe, expect, test } from "bun:test";
import { GROUP_SEQUENCE_MASK, UNICAST_SEQUENCE } from "../../src/mcdist/frame.ts";
import { GroupSequence } from "../../src/mcdist/group-sequence.ts";

describe("a client's view of the server's group sequence", () => {
  test("numbers one after another (fragments sharing one) are no loss; a jump ahead is, once", () => {
    const seen = new GroupSequence();
    for (const s of [7, 7, 7, 8, 9, 9, 10]) seen.note(s);
    expect(seen.takeLoss()).toBe(false);
    seen.note(13);
    expect(seen.takeLoss()).toBe(true);
    expect(seen.takeLoss()).toBe(false);
    seen.note(14);
    expect(seen.takeLoss()).toBe(false);
  });

  test("late frames, replays and unicast sends tell nothing; the count wraps around", () => {
    const seen = new GroupSequence();
    for (const s of [20, 21, 19, 5, 21, (UNICAST_SEQUENCE | 900) >>> 0, 22]) seen.note(s);
    expect(seen.takeLoss()).toBe(false);
    const wrap = new GroupSequence();
    for (const s of [GROUP_SEQUENCE_MASK - 1, GROUP_SEQUENCE_MASK, 0, 1]) wrap.note(s);
    expect(wrap.takeLoss()).toBe(false);
    wrap.note(3);
    expect(wrap.takeLoss()).toBe(true);
  });
});
