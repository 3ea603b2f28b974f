/**
 * A family tree as `ls` shows it, on any backend: parents first, each followed by its clones by
 * clone ID; `depth` says how far down the tree. A member whose parent is not among `members` is a
 * root.
 */
export function familyOrder<T>(
  members: T[],
  place: (member: T) => { key: string | number; parent: string | number | undefined; cloneId: number },
): Array<T & { depth: number }> {
  const keys = new Set(members.map((m) => place(m).key));
  const roots = members.filter((m) => {
    const parent = place(m).parent;
    return parent === undefined || !keys.has(parent);
  });
  const walk = (m: T, depth: number): Array<T & { depth: number }> => [
    { ...m, depth },
    ...members
      .filter((c) => place(c).parent === place(m).key)
      .sort((a, b) => place(a).cloneId - place(b).cloneId)
      .flatMap((c) => walk(c, depth + 1)),
  ];
  return roots.flatMap((m) => walk(m, 0));
}

/** A member's name in the tree column: indented under its parent. */
export function treeName(name: string, depth: number): string {
  return depth === 0 ? name : `${"  ".repeat(depth - 1)}└─ ${name}`;
}
