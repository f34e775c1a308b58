import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
process.env.TROUPE_HOME = mkdtempSync(join(tmpdir(), 'tb-'));
const { init, shutdown, get } = await import('troupe');
const { Echo } = await import('./workloads/actors.ts');
await init({ numCpus: 2, logToDriver: false });
try {
  const e = Echo.remote();
  await e.echo(1);
  const t = performance.now();
  for (let i = 0; i < 60; i++) await get(Array.from({ length: 1000 }, (_, k) => e.echo(k)));
  console.log('actor async/s', Math.round(60000 / ((performance.now() - t) / 1000)));
} finally { await shutdown(); }
