import { describe, expect, test } from "bun:test";
import { GROUP_SEQUENCE_MASK, UNICAST_SEQUENCE } from "../../src/mcdist/frame.ts";
import { GroupSequence, sequenceBefore } from "../../src/mcdist/group-sequence.ts";

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

  test("a client listened whole from the object after the first it heard (its earlier fragments may have gone by)", () => {
    const seen = new GroupSequence();
    expect(seen.heardFrom).toBeUndefined();
    seen.note((UNICAST_SEQUENCE | 4) >>> 0);
    expect(seen.heardFrom).toBeUndefined();
    for (const s of [41, 41, 42, 43]) seen.note(s);
    expect(seen.heardFrom).toBe(42);
    const top = new GroupSequence();
    top.note(GROUP_SEQUENCE_MASK);
    expect(top.heardFrom).toBe(0);
  });

  test("which number came first, across the wrap-around", () => {
    expect(sequenceBefore(5, 6)).toBe(true);
    expect(sequenceBefore(6, 5)).toBe(false);
    expect(sequenceBefore(6, 6)).toBe(false);
    expect(sequenceBefore(GROUP_SEQUENCE_MASK, 2)).toBe(true);
    expect(sequenceBefore(2, GROUP_SEQUENCE_MASK)).toBe(false);
  });
});
