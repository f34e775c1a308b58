// One job for the first-call benchmark (bench/workloads/jobs.ts): run as a driver of its own on a cluster that is up.
// Prints the first call's time (a prestarted spare worker, which imports the module), then, after the lease has gone
// back, the time of a call that reuses this job's worker (the module is loaded there already).
import { init, shutdown } from 'troupe';
import { defaults } from '../../runtime/base/config.ts';
import { smallValue } from './tasks.ts';

const timed = async (): Promise<number> => {
  const t0 = performance.now();
  await smallValue.remote();
  return performance.now() - t0;
};
await init({ logToDriver: false });
const spare = await timed();
await new Promise((r) => setTimeout(r, defaults.leaseIdleMs + 1000)); // the lease goes back to the node
const reused = await timed();
console.log(`FIRST_CALLS ${JSON.stringify({ spare, reused })}`);
await shutdown();
