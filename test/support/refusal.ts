import { expect } from "bun:test";
import { SnowflockError } from "../../src/errors.ts";

/** The message of the SnowflockError `run` throws; fails the test if it throws nothing or something else. */
export function refusalMessage(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(SnowflockError);
    return (error as SnowflockError).message;
  }
  throw new Error("expected a refusal");
}
