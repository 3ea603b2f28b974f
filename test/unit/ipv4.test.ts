/** One IPv4 grammar: inventories and page-server addresses (isIpv4) accept exactly what the sockets do (parseIpv4). */
import { expect, test } from "bun:test";
import { isIpv4 } from "../../src/net/ipv4.ts";
import { parseIpv4 } from "../../src/sys/inet.ts";
import { parseUdpEndpoint } from "../../src/mcdist/transport.ts";

const accepted = ["10.77.0.11", "0.0.0.0", "255.255.255.255", "239.1.2.3"];
const refused = ["010.0.0.1", "10.0.0.01", "256.0.0.1", "1.2.3", "1.2.3.4.", " 1.2.3.4", "1.2.3.-4", "1.2.3.4e0", "0x1.2.3.4", ""];

test("accepted by both, as octets", () => {
  for (const text of accepted) {
    expect(isIpv4(text)).toBe(true);
    expect([...parseIpv4(text)].join(".")).toBe(text);
  }
});

test("refused by both: leading zeros (octal elsewhere), out of range, wrong shape", () => {
  for (const text of refused) {
    expect(isIpv4(text)).toBe(false);
    expect(() => parseIpv4(text)).toThrow(`not an IPv4 address: ${text}`);
  }
  expect(() => parseUdpEndpoint("010.0.0.1:7789")).toThrow("not an IPv4 address: 010.0.0.1");
});
