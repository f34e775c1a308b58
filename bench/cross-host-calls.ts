// The actor-call rows of the cross-host bench alone (bench/cross-host.ts), with how long each sync call took, for work
// on the latency of calls across machines without the whole bench:
//   node --import tsx --conditions=troupe-source bench/cross-host-calls.ts [sync calls per turn] [turns]
// TROUPE_CPU_PROF_DIR=dir also writes CPU profiles of every troupe process and of the driver there.
import { crossHost } from './cross-host.ts';
import type { Latency } from './workloads/references.ts';

const sync = Number(process.argv[2] ?? 5000);
const rounds = Number(process.argv[3] ?? 5);
process.env.CROSS_LATENCY = '1'; // the hosts' processes inherit it
const x = await crossHost({ sync, async: 20_000, rounds, objectBytes: 1 << 20, objectRounds: 1 });
if ('unavailable' in x) {
  console.error(`cannot simulate hosts here: ${x.unavailable}`);
  process.exitCode = 1;
} else {
  const row = (what: string, f: { troupe: number; moleculer: number }) =>
    console.log(
      `${what}: troupe ${f.troupe.toFixed(0)}/s, moleculer ${f.moleculer.toFixed(0)}/s, ` +
        `troupe/moleculer ${(f.troupe / f.moleculer).toFixed(2)}`,
    );
  row('one at a time', x.callsSync);
  row('1,000 in flight', x.callsAsync);
  const ms = (l: Latency) =>
    `p10 ${l.p10.toFixed(3)} p50 ${l.p50.toFixed(3)} p90 ${l.p90.toFixed(3)} p99 ${l.p99.toFixed(2)} ` +
    `max ${l.max.toFixed(1)} ms; ${(100 * l.slowShare).toFixed(0)}% of the time in calls over 2 ms`;
  if (x.latencySync) {
    console.log(`  troupe    ${ms(x.latencySync.troupe)}`);
    console.log(`  moleculer ${ms(x.latencySync.moleculer)}`);
  }
}
