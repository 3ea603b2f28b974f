/** Ethernet addresses: random ones for VMs, and their text form (aa:bb:cc:dd:ee:ff). */

const MAC_BYTES = 6;

/** A random unicast, locally administered Ethernet address. */
export function randomMac(): Uint8Array {
  const mac = crypto.getRandomValues(new Uint8Array(MAC_BYTES));
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}

export function formatMac(mac: ArrayLike<number>): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}

export function parseMac(text: string): Uint8Array | undefined {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text)) return undefined;
  return new Uint8Array(text.split(":").map((b) => Number.parseInt(b, 16)));
}
