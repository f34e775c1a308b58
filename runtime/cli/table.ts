// Plain aligned columns for the CLI.
import { printable } from './terminal-text.ts';

/** Prints rows under a header; cells come from the bus, so their control characters are shown escaped. */
export function printTable(header: string[], cells: string[][]): void {
  const rows = cells.map((r) => r.map((c) => printable(c ?? '')));
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (c ?? '').padEnd(widths[i]))
      .join('  ')
      .trimEnd();
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}
