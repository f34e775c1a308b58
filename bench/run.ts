// npm run bench: troupe measured against references in the same run, on the same nats-server.
// Writes bench/RESULTS.md and bench/results.json (or only prints with --smoke, which uses tiny counts).
import { writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { init, shutdown, get } from 'troupe';
import { Bus } from '../runtime/transport.ts';
import { currentClient } from '../runtime/client.ts';
import { Tiny, Echo } from './workloads/actors.ts';

const smoke = process.argv.includes('--smoke');
const n = (full: number, tiny: number) => (smoke ? tiny : full);

interface Metric { troupe: number; moleculer: number | null; raw_nats: number | null; unit: string; note?: string }
const metrics: Record<string, Metric> = {};

const info = await init({ numCpus: 2, logToDriver: false });
const bus = currentClient().bus;

/** Raw nats.js request/reply against an echo responder on the same server: the reference for call rates. */
async function rawNats(count: number, inFlight: number): Promise<number> {
  const sub = bus.nc.subscribe('bench.echo', { callback: (_e, m) => { m.respond(m.data); } });
  const payload = new Uint8Array(8);
  await bus.nc.request('bench.echo', payload); // warm
  const t0 = performance.now();
  for (let i = 0; i < count; i += inFlight) {
    await Promise.all(Array.from({ length: Math.min(inFlight, count - i) }, () => bus.nc.request('bench.echo', payload, { timeout: 10_000 })));
  }
  const rate = count / ((performance.now() - t0) / 1000);
  sub.unsubscribe();
  return rate;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

try {
  // Issue 3's goal: 10,000 lightweight actors created on one node, each answering a call, in under 10 s.
  const actors = n(10_000, 20);
  const secs = await timed(async () => {
    const hs = Array.from({ length: actors }, (_, i) => Tiny.remote(i));
    const answers = await get(hs.map((h) => h.ping()));
    if (!answers.every((v, i) => v === i)) throw new Error('an actor answered wrongly');
  });
  metrics[`shared_actors_${actors}_create_and_call`] = { troupe: round(secs, 2), moleculer: null, raw_nats: null, unit: 's', note: 'goal < 10 s for 10,000' };

  // Actor calls, sync (one at a time) and async (all submitted, then one get), against raw request/reply.
  const echo = Echo.remote();
  await echo.echo(0);
  const syncCalls = n(2000, 20);
  const syncSecs = await timed(async () => { for (let i = 0; i < syncCalls; i++) await echo.echo(i); });
  metrics['1_1_actor_calls_sync'] = { troupe: round(syncCalls / syncSecs), moleculer: null, raw_nats: round(await rawNats(syncCalls, 1)), unit: 'ops/s' };
  const asyncCalls = n(20_000, 50);
  const asyncSecs = await timed(async () => { await get(Array.from({ length: asyncCalls }, (_, i) => echo.echo(i))); });
  metrics['1_1_actor_calls_async'] = { troupe: round(asyncCalls / asyncSecs), moleculer: null, raw_nats: round(await rawNats(asyncCalls, 1000)), unit: 'ops/s', note: 'raw NATS with 1,000 requests in flight' };
} finally {
  await shutdown();
}

const rows = Object.entries(metrics).map(([name, m]) => {
  const ratio = m.raw_nats ? `${(m.unit === 's' ? m.raw_nats / m.troupe : m.troupe / m.raw_nats).toFixed(2)}× raw NATS` : '';
  return `| ${name} | ${m.troupe} ${m.unit} | ${m.raw_nats ?? '-'} | ${ratio} | ${m.note ?? ''} |`;
});
const table = ['| metric | troupe | raw NATS | ratio | note |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
console.log(table);
if (!smoke) {
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, cluster ${info.embedded ? 'embedded (one node, 2 CPUs)' : info.address}`;
  writeFileSync(new URL('./results.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), machine, metrics }, null, 2) + '\n');
  writeFileSync(new URL('./RESULTS.md', import.meta.url), `# Benchmarks\n\n${new Date().toISOString().slice(0, 10)} on ${machine}. Reproduce with \`npm run bench\`.\n\n${table}\n`);
}

function round(x: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
