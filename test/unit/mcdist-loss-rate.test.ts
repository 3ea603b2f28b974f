/** The rate a measuring mcdist client reports while its frames go missing (src/mcdist/loss-rate.ts). */
import { expect, test } from "bun:test";
import { LossRateCap } from "../../src/mcdist/loss-rate.ts";

test("each loss halves the reported rate down to the floor; reports without a loss raise it by a quarter until the cap goes", () => {
  const cap = new LossRateCap(250, 16384);
  expect(cap.report(5000)).toBe(5000); // no loss yet: what was measured
  expect(cap.lost(5000)).toBe(2500);
  expect(cap.report(5000)).toBe(2500); // the report right after the loss keeps the cap
  expect(cap.lost(2500)).toBe(1250);
  for (let i = 0; i < 4; i++) cap.lost(undefined);
  expect(cap.current).toBe(250); // never below the server's floor
  expect(cap.report(undefined)).toBe(250);
  const raised = [cap.report(5000), cap.report(5000), cap.report(undefined)];
  expect(raised).toEqual([313, 392, 490]);
  while (cap.current !== undefined) cap.report(5000);
  expect(cap.report(5000)).toBe(5000); // grown past what the client handles: gone
});

test("a loss before any report halves from the unpaced guess; a measured rate below the cap is reported as measured", () => {
  const cap = new LossRateCap(250, 16384);
  expect(cap.lost(undefined)).toBe(8192);
  expect(cap.report(3000)).toBe(3000);
});
