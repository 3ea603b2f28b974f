/** Address text as libc's inet_pton reads it, without a call into libc. */

/** Dotted-quad text as inet_pton(AF_INET) reads it: four decimal octets, no leading zeros ("010" could be octal elsewhere). */
export function parseIpv4(address: string): Uint8Array {
  const octets = address.split(".").map((o) => (/^(0|[1-9]\d{0,2})$/.test(o) ? Number(o) : NaN));
  if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255))) throw new RangeError(`not an IPv4 address: ${address}`);
  return Uint8Array.from(octets);
}
