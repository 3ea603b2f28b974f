/** Text formatting shared by the benchmark reports: numbers that may be missing, and aligned tables. */
export const fixed = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "-");
export const mb = (bytes: number) => fixed(bytes / 2 ** 20);
export const whole = (n: number) => (Number.isFinite(n) ? String(Math.round(n)) : "-");

/** Columns right-aligned, except the first `leftColumns` (left-aligned). */
export function table(header: string[], rows: string[][], leftColumns = 0): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  return [header, ...rows].map((row) =>
    row
      .map((c, i) => (i < leftColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
}
