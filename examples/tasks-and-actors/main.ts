// Tasks and actors on an embedded local cluster: values, refs, nested refs, wait, errors, a named actor.
import { init, shutdown, put, get, wait, getActor, TaskError } from 'troupe';
import { square, sumAll, normalize, explode, whereAmI } from './tasks.ts';
import { Mean } from './actors.ts';

const t0 = Date.now();
const cluster = await init();
console.log(
  `cluster at ${cluster.address} (${cluster.embedded ? 'started by this script' : 'joined'}) in ${Date.now() - t0} ms`,
);
try {
  const squares = Array.from({ length: 10 }, (_, i) => square.remote(i));
  console.log('squares of 0..9:', await get(squares));

  // A ref as an argument: the worker resolves it, the value never comes back through here.
  const big = put(new Float32Array(50_000).fill(2));
  const unit = await normalize.remote(big);
  console.log(`normalized a ${unit.length}-element Float32Array on a worker; first value ${unit[0].toFixed(6)}`);

  // Chained tasks and nested refs.
  console.log('sum of squares via nested refs:', await sumAll.remote(squares));
  console.log('square(square(3)) =', await square.remote(square.remote(3)));

  const [ready, pending] = await wait(squares, { numReturns: 3 });
  console.log(`wait: ${ready.length} ready, ${pending.length} pending (of ${squares.length})`);

  const placements = await get(Array.from({ length: 4 }, () => whereAmI.remote()));
  console.log('workers used:', [...new Set(placements.map((p) => p.pid))].join(', '));

  // An actor: state that lives on a worker. Its output comes back here, prefixed "(Mean pid=…)".
  const mean = Mean.options({ name: 'mean' }).remote();
  mean.push([1, 2, 3]);
  mean.push(put([4, 5])); // a ref argument: the actor gets the array
  const same = await getActor<Mean>('mean'); // any driver can find a named actor
  console.log('mean of 1..6 from the actor:', await same.push([6]));

  try {
    await explode.remote('on purpose');
  } catch (e) {
    if (!(e instanceof TaskError)) throw e;
    console.log(`caught ${e.name} (${e.remoteName}): ${e.message}`);
    console.log(e.remoteStack.split('\n').slice(0, 2).join('\n'));
  }
} finally {
  await shutdown();
}
console.log(`done in ${Date.now() - t0} ms`);
