/** IPv4 addresses in dotted-quad text, as inventories, clone orders and memory-server addresses carry them. */
export function isIpv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => /^(0|[1-9]\d{0,2})$/.test(p) && Number(p) <= 255);
}
