// Byte counts as people write and read them: "512MB", "2GiB", "1.5 KiB".
import { UsageError } from './errors.ts';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1e3,
  kb: 1e3,
  m: 1e6,
  mb: 1e6,
  g: 1e9,
  gb: 1e9,
  t: 1e12,
  tb: 1e12,
  ki: 2 ** 10,
  kib: 2 ** 10,
  mi: 2 ** 20,
  mib: 2 ** 20,
  gi: 2 ** 30,
  gib: 2 ** 30,
  ti: 2 ** 40,
  tib: 2 ** 40,
};

/** "2GB" → 2e9, "512MiB" → 536870912, "1000" → 1000. `what` names the flag in the error. */
export function parseBytes(text: string | number, what: string): number {
  if (typeof text === 'number' && Number.isFinite(text) && text >= 0) return Math.floor(text);
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(String(text));
  const unit = m && UNITS[m[2].toLowerCase()];
  if (!m || unit === undefined || unit === null)
    throw new UsageError(`${what} must be a byte count such as 512MB or 2GiB, got ${JSON.stringify(text)}`);
  return Math.floor(Number(m[1]) * unit);
}

/** 1536 → "1.5 KiB". */
export function formatBytes(n: number): string {
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  if (n < 1024) return `${n} B`;
  let v = n;
  let i = -1;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}
