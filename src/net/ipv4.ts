/** IPv4 addresses in dotted-quad text, as inventories, clone orders and memory-server addresses carry them. */
import { parseIpv4 } from "../sys/inet.ts";

/** Whether `text` is an IPv4 address: the one grammar the sockets use too (sys/inet.ts). */
export function isIpv4(text: string): boolean {
  try {
    parseIpv4(text);
    return true;
  } catch {
    return false;
  }
}
