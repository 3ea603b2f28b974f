/** Every refusal of a descriptor: one DESCRIPTOR error saying what is wrong with it. */
import { SnowflockError } from "../errors.ts";

export function refuse(why: string, hint?: string): never {
  throw new SnowflockError("DESCRIPTOR", `not a usable VM descriptor: ${why}`, hint);
}
