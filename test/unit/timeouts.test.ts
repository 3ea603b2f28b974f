import { describe, expect, test } from "bun:test";
import { SnowflockError } from "../../src/errors.ts";
import { settledOrAfter, timeoutScale } from "../../src/timeouts.ts";
import { snowflock } from "../support/cli.ts";

describe("SNOWFLOCK_TIMEOUT_SCALE", () => {
  test("unset or empty is 1; a number is taken as it is", () => {
    expect(timeoutScale({})).toBe(1);
    expect(timeoutScale({ SNOWFLOCK_TIMEOUT_SCALE: "" })).toBe(1);
    expect(timeoutScale({ SNOWFLOCK_TIMEOUT_SCALE: "10" })).toBe(10);
    expect(timeoutScale({ SNOWFLOCK_TIMEOUT_SCALE: "0.5" })).toBe(0.5);
  });

  for (const bad of ["0", "-3", "ten", "Infinity", "1e9"]) {
    test(`'${bad}' is refused naming the variable`, () => {
      expect(() => timeoutScale({ SNOWFLOCK_TIMEOUT_SCALE: bad })).toThrow(SnowflockError);
      expect(() => timeoutScale({ SNOWFLOCK_TIMEOUT_SCALE: bad })).toThrow(`bad SNOWFLOCK_TIMEOUT_SCALE '${bad}'`);
    });
  }

  test("the CLI refuses a bad value with one line before it starts anything", async () => {
    const r = await snowflock(["ls"], { SNOWFLOCK_TIMEOUT_SCALE: "soon" });
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe("[error] bad SNOWFLOCK_TIMEOUT_SCALE 'soon' (give a number above 0 and at most 1000, such as 10)");
  });
});

describe("settledOrAfter", () => {
  test("returns when the promise settles, resolved or rejected, and otherwise after the time", async () => {
    let settle!: () => void;
    const pending = new Promise<void>((resolve) => (settle = resolve));
    const waited = settledOrAfter(pending, 3_600_000); // an hour: only the promise can end this wait
    settle();
    await waited;
    await settledOrAfter(Promise.reject(new Error("refused")), 3_600_000); // a rejection ends it too, not thrown
    let ended = false;
    await settledOrAfter(new Promise(() => {}), 1).then(() => (ended = true));
    expect(ended).toBe(true);
  });
});
