// The tls_* rows of npm run bench alone: the cross-host figures (bench/cross-host.ts) on a TLS bus and on a plain bus
// (--no-tls), each on fresh hosts, in pairs whose order alternates (TLS first, then plain first) so that a machine
// whose load drifts does not favour one; medians of the pairs:
//   node --import tsx --conditions=troupe-source bench/tls-cost.ts [sync calls per turn] [turns] [object MB] [pairs]
// The references (Moleculer, raw nats.js) run on the same bus, with the same TLS: their TLS/plain ratio shows what the
// machine's drift alone does.
import { crossHost, type CrossHostFigures } from './cross-host.ts';

const sync = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 3);
const mb = Number(process.argv[4] ?? 100);
const pairs = Number(process.argv[5] ?? 2);
const counts = { sync, async: 20_000, rounds, objectBytes: mb * 2 ** 20, objectRounds: 2 };
const runs: { tls: CrossHostFigures[]; plain: CrossHostFigures[] } = { tls: [], plain: [] };
for (let i = 0; i < pairs; i++) {
  for (const tls of i % 2 ? [false, true] : [true, false]) {
    const x = await crossHost(counts, 180_000, { tls });
    if ('unavailable' in x) {
      console.error(`cannot simulate hosts here: ${x.unavailable}`);
      process.exit(1);
    }
    (tls ? runs.tls : runs.plain).push(x);
  }
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const row = (what: string, unit: string, f: (x: CrossHostFigures) => number) => {
  const [t, p] = [median(runs.tls.map(f)), median(runs.plain.map(f))];
  console.log(`${what}: TLS ${t.toFixed(0)} ${unit}, plain ${p.toFixed(0)} ${unit}, TLS/plain ${(t / p).toFixed(2)}`);
};
row('tls_actor_calls_sync', 'ops/s', (x) => x.callsSync.troupe);
row('tls_actor_calls_async', 'ops/s', (x) => x.callsAsync.troupe);
row(`tls_get_${mb}mb`, 'MB/s', (x) => x.object.troupe / 2 ** 20);
row('reference moleculer sync', 'ops/s', (x) => x.callsSync.moleculer);
row('reference moleculer async', 'ops/s', (x) => x.callsAsync.moleculer);
row(`reference raw nats ${mb} MB`, 'MB/s', (x) => x.object.raw_nats / 2 ** 20);
