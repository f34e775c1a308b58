// The tls_* rows of npm run bench alone: the cross-host figures (bench/cross-host.ts) on a TLS bus, then on fresh
// hosts with a plain bus (--no-tls), in one run:
//   node --import tsx --conditions=troupe-source bench/tls-cost.ts [sync calls per turn] [turns] [object MB]
import { crossHost, type CrossHostFigures } from './cross-host.ts';

const sync = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 3);
const mb = Number(process.argv[4] ?? 100);
const counts = { sync, async: 20_000, rounds, objectBytes: mb * 2 ** 20, objectRounds: 2 };
const tls = await crossHost(counts);
const plain = 'unavailable' in tls ? tls : await crossHost(counts, 180_000, { tls: false });
if ('unavailable' in tls || 'unavailable' in plain) {
  console.error(`cannot simulate hosts here: ${'unavailable' in tls ? tls.unavailable : 'see above'}`);
  process.exitCode = 1;
} else {
  const row = (what: string, unit: string, f: (x: CrossHostFigures) => number) =>
    console.log(
      `${what}: TLS ${f(tls).toFixed(0)} ${unit}, plain ${f(plain).toFixed(0)} ${unit}, ` +
        `TLS/plain ${(f(tls) / f(plain)).toFixed(2)}`,
    );
  row('tls_actor_calls_sync', 'ops/s', (x) => x.callsSync.troupe);
  row('tls_actor_calls_async', 'ops/s', (x) => x.callsAsync.troupe);
  row(`tls_get_${mb}mb`, 'MB/s', (x) => x.object.troupe / 2 ** 20);
  row('references: moleculer sync', 'ops/s', (x) => x.callsSync.moleculer);
  row(`references: raw nats ${mb} MB`, 'MB/s', (x) => x.object.raw_nats / 2 ** 20);
}
