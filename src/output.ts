/**
 * What the CLI prints. stdout carries the guest's console (or one JSON document with --json), so
 * it can be piped; snowflock's own progress and errors go to stderr through consola.
 */
import { createConsola } from "consola";

export const log = createConsola({
  stdout: process.stderr,
  stderr: process.stderr,
  level: process.env.SNOWFLOCK_QUIET ? 1 : 3,
});

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * `text` with every control character but tab shown as `\xNN`: names, command lines and console
 * text come from guests and descriptor files, and must not drive the terminal (escape sequences).
 */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Prints text (several lines, for a report) with every control character but the line breaks escaped. */
export function printLine(text: string): void {
  process.stdout.write(`${text.split("\n").map(printable).join("\n")}\n`);
}

/** A plain aligned table for terminals. */
export function printTable(header: string[], cells: string[][]): void {
  const rows = cells.map((row) => row.map(printable));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const format = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  printLine(format(header));
  for (const row of rows) printLine(format(row));
}
