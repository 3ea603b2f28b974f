/** The family tree `ls` shows on both backends (src/family-order.ts). */
import { expect, test } from "bun:test";
import { familyOrder, treeName } from "../../src/family-order.ts";

test("parents first, clones under them by clone ID, grandchildren deeper; an orphan is a root", () => {
  const vms = [
    { name: "web.2", parent: "web", cloneId: 2 },
    { name: "db", parent: undefined, cloneId: 0 },
    { name: "web.1.1", parent: "web.1", cloneId: 1 },
    { name: "web", parent: undefined, cloneId: 0 },
    { name: "web.1", parent: "web", cloneId: 1 },
    { name: "gone.3", parent: "gone", cloneId: 3 },
  ];
  const ordered = familyOrder(vms, (v) => ({ key: v.name, parent: v.parent, cloneId: v.cloneId }));
  expect(ordered.map((v) => [v.name, v.depth])).toEqual([
    ["db", 0],
    ["web", 0],
    ["web.1", 1],
    ["web.1.1", 2],
    ["web.2", 1],
    ["gone.3", 0],
  ]);
  expect(ordered.map((v) => treeName(v.name, v.depth))).toEqual(["db", "web", "└─ web.1", "  └─ web.1.1", "└─ web.2", "gone.3"]);
});
