// node --import tsx bench/new-job.ts [jobs]: only the new-job case of npm run bench, on a cluster of its own (a head
// node with 2 CPUs), printed, nothing written.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHead, recordCurrentCluster } from '../runtime/cluster/local-cluster.ts';
import { firstCalls } from './workloads/jobs.ts';

const jobs = Number(process.argv[2] ?? 9);
const home = mkdtempSync(join(tmpdir(), 'troupe-bench-'));
process.env.TROUPE_HOME = home;
const head = await startHead({ detached: false, numCpus: 2, numGpus: 0 });
try {
  recordCurrentCluster(head);
  const { spare, reused } = await firstCalls(jobs);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const fmt = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(', ');
  console.log(`first call of a new job (spare worker): median ${median(spare).toFixed(1)} ms (${fmt(spare)})`);
  console.log(`first call on a worker with the module loaded: median ${median(reused).toFixed(1)} ms (${fmt(reused)})`);
  console.log(`ratio ${(median(spare) / median(reused)).toFixed(2)}×`);
} finally {
  await head.stop();
  rmSync(home, { recursive: true, force: true });
}
