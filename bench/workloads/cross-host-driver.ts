// The driver of the cross-host bench (bench/cross-host.ts), run on host A of a cluster whose only node with resource
// `b` is on host B. Prints one JSON line per figure ({"figure": …}):
// - actor calls from here to an Echo actor on B, against a Moleculer broker here calling the echo service on B (started
//   by the orchestrator), in turns (Moleculer, troupe), a first turn of both not counted, medians kept;
// - a Float32 object put here and read by an actor on B, in bytes per second of its get() there.
import { hostname } from 'node:os';
import { init, shutdown, put, wait } from 'troupe';
import { Echo } from './actors.ts';
import { Reader } from './cross-host-reader.ts';
import { moleculerCaller, rate } from './references.ts';

const count = (name: string) => {
  const v = Number(process.env[name]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, not ${process.env[name]}`);
  return v;
};
const [SYNC, ASYNC, ROUNDS, BYTES, OBJECT_ROUNDS] = [
  'CROSS_SYNC',
  'CROSS_ASYNC',
  'CROSS_ROUNDS',
  'CROSS_BYTES',
  'CROSS_OBJECT_ROUNDS',
].map(count);
const IN_FLIGHT = 1000;
const onB = { resources: { b: 1 } };
const say = (figure: string, o: Record<string, number | string>) => console.log(JSON.stringify({ figure, ...o }));

await init({ logToDriver: false });
const mol = await moleculerCaller(process.env.CROSS_NATS_URL!, process.env.CROSS_TOKEN!);
try {
  const echo = Echo.options(onB).remote();
  const reader = Reader.options(onB).remote();
  const where = await reader.where();
  if (where === hostname()) throw new Error(`the actors were placed on this host (${where}), not on host B`);

  for (const kind of ['sync', 'async'] as const) {
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let turn = -1; turn < ROUNDS; turn++) {
      const theirsNow = kind === 'sync' ? await mol.sync(SYNC) : await mol.inFlight(ASYNC, IN_FLIGHT);
      const oursNow =
        kind === 'sync' ? await rate(SYNC, 1, (i) => echo.echo(i)) : await rate(ASYNC, IN_FLIGHT, (i) => echo.echo(i));
      if (turn >= 0) {
        theirs.push(theirsNow);
        ours.push(oursNow);
      }
    }
    say(`actor_calls_${kind}`, { troupe: median(ours), moleculer: median(theirs), host: where });
  }

  // A fresh object each round (B's node keeps the copy it fetched); round -1 warms up and is not counted.
  let secs = 0;
  for (let round = -1; round < OBJECT_ROUNDS; round++) {
    const ref = put(new Float32Array(BYTES / 4).fill(round));
    await wait([ref]);
    const took = await reader.read([ref], BYTES / 4);
    if (round >= 0) secs += took;
  }
  say('object', { troupe: (BYTES * OBJECT_ROUNDS) / secs, host: where });
} finally {
  await mol.stop();
  await shutdown();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
