// npm run bench: troupe measured against references in the same run, on the same nats-server.
// Writes bench/RESULTS.md and bench/results.json (or only prints with --smoke, which uses tiny counts).
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { init, shutdown, get, wait } from 'troupe';
import { startHead, startNode, type StartedCluster } from '../runtime/local-cluster.ts';
import { writeClusterFile } from '../runtime/config.ts';
import { currentClient } from '../runtime/client.ts';
import { Tiny, Echo } from './workloads/actors.ts';
import { makeFloats, putGetTensor, memcpy, rawNatsBulk } from './workloads/objects.ts';

const smoke = process.argv.includes('--smoke');
const n = (full: number, tiny: number) => (smoke ? tiny : full);
const MB = 1024 * 1024;

/** `reference` names the column the ratio is taken against. */
interface Metric { troupe: number; moleculer: number | null; raw_nats: number | null; memcpy?: number; reference?: 'raw_nats' | 'moleculer' | 'memcpy'; unit: string; note?: string }
const metrics: Record<string, Metric> = {};

// A cluster of its own: a head node (2 CPUs) and a second node daemon ("far", 1 CPU) for cross-node transfers.
const home = mkdtempSync(join(tmpdir(), 'troupe-bench-'));
process.env.TROUPE_HOME = home;
const started: StartedCluster[] = [];
const head = await startHead({ detached: false, numCpus: 2, numGpus: 0 });
started.push(head);
started.push(await startNode({ detached: false, numCpus: 1, numGpus: 0, resources: { far: 1 }, address: head.address, token: head.token, sessionDir: head.sessionDir }));
writeClusterFile({ address: head.address, token: head.token, sessionDir: head.sessionDir, localNode: { nodeId: head.nodeId, objectDir: head.objectDir, objectStoreMemory: head.objectStoreMemory }, startedAt: new Date().toISOString() });
await init({ logToDriver: false });
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

  // Object store: put+get of Float32 tensors in one process against memcpy of the same bytes (goal >= 0.5x).
  for (const [label, mb, rounds] of [['1mb', 1, n(200, 3)], ['100mb', 100, n(5, 1)]] as const) {
    const bytes = smoke ? MB : mb * MB;
    const gbps = (await putGetTensor(bytes, rounds)) / 1e9;
    metrics[`put_get_tensor_${label}`] = { troupe: round(gbps, 2), moleculer: null, raw_nats: null, memcpy: round(memcpy(bytes, rounds * 4) / 1e9, 2), reference: 'memcpy', unit: 'GB/s', note: 'goal >= 0.5x memcpy' };
  }
  // A 100 MB object held by the other node daemon, read here (our node fetches it and keeps the copy), against raw
  // nats.js fetching the same bytes from another process in the same chunks (goal >= 0.8x).
  const far = makeFloats.options({ resources: { far: 1 } });
  const farBytes = smoke ? 4 * MB : 100 * MB;
  const farRounds = n(4, 1);
  let farSecs = 0;
  for (let i = 0; i < farRounds; i++) {
    const ref = far.remote(farBytes / 4, i);
    await wait([ref]);
    farSecs += await timed(async () => { if ((await get(ref)).length !== farBytes / 4) throw new Error('short object'); });
  }
  metrics['get_100mb_from_other_node'] = {
    troupe: round(farBytes * farRounds / farSecs / 1e9, 2), moleculer: null,
    raw_nats: round((await rawNatsBulk(bus, head.address, head.token, farBytes, farRounds)) / 1e9, 2), reference: 'raw_nats', unit: 'GB/s', note: 'goal >= 0.8x raw NATS',
  };
} finally {
  await shutdown();
  for (const c of started.reverse()) await c.stop();
  rmSync(home, { recursive: true, force: true });
}

const rows = Object.entries(metrics).map(([name, m]) => {
  const refName = m.reference ?? (m.raw_nats !== null ? 'raw_nats' : undefined);
  const ref = refName ? m[refName] : undefined;
  const ratio = ref ? `${(m.unit === 's' ? ref / m.troupe : m.troupe / ref).toFixed(2)}× ${refName!.replace('_', ' ')}` : '';
  return `| ${name} | ${m.troupe} ${m.unit} | ${ref ?? '-'} | ${ratio} | ${m.note ?? ''} |`;
});
const table = ['| metric | troupe | reference | ratio | note |', '| --- | --- | --- | --- | --- |', ...rows].join('\n');
console.log(table);
if (!smoke) {
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, cluster of two node daemons on this machine (2 + 1 CPUs)`;
  writeFileSync(new URL('./results.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), machine, metrics }, null, 2) + '\n');
  writeFileSync(new URL('./RESULTS.md', import.meta.url), `# Benchmarks\n\n${new Date().toISOString().slice(0, 10)} on ${machine}. Reproduce with \`npm run bench\`.\n\n${table}\n`);
}

function round(x: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
