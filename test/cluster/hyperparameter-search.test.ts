// Hyperparameter search: spaces expand and draw as documented, trials run as parallel tasks, the best is the best,
// failures are recorded, misuse fails at the call.
import test from 'ava';
import { TaskError, UsageError } from '../../runtime/index.ts';
import {
  search,
  configs,
  grid,
  choice,
  uniform,
  logUniform,
  randInt,
  SearchError,
  type Trial,
} from '../../runtime/index.ts';
import { useCluster, tempDir } from '../helpers/cluster.ts';
import { paraboloid, flaky, alwaysFails, wrongKeys, where, tied } from '../fixtures/search.ts';

useCluster(test, { head: { numCpus: 2 } });

test('grids expand to their cartesian product, first key slowest; constants and nested spaces pass through', (t) => {
  const c = configs(
    { a: grid([1, 2]), lr: 0.1, b: grid(['x', 'y', 'z']), model: { units: grid([8, 16]), act: 'relu' } },
    { seed: 1 },
  );
  t.is(c.length, 12);
  t.deepEqual(c.slice(0, 3), [
    { a: 1, lr: 0.1, b: 'x', model: { units: 8, act: 'relu' } },
    { a: 1, lr: 0.1, b: 'x', model: { units: 16, act: 'relu' } },
    { a: 1, lr: 0.1, b: 'y', model: { units: 8, act: 'relu' } },
  ]);
  t.deepEqual(new Set(c.map((x) => `${x.a}${x.b}${x.model.units}`)).size, 12);
  // samples repeats the grid, drawing the random keys afresh for each point
  const r = configs({ a: grid([1, 2, 3]), u: uniform(0, 1) }, { seed: 1, samples: 2 });
  t.deepEqual(
    r.map((x) => x.a),
    [1, 2, 3, 1, 2, 3],
  );
  t.is(new Set(r.map((x) => x.u)).size, 6);
});

test('random draws stay in their bounds and are the same for the same seed', (t) => {
  const space = { u: uniform(-2, 3), l: logUniform(1e-4, 1), i: randInt(3, 6), c: choice(['sgd', 'adam', 'rmsprop']) };
  const a = configs(space, { seed: 42, samples: 400 });
  t.true(a.every((x) => x.u >= -2 && x.u < 3));
  t.true(a.every((x) => x.l >= 1e-4 && x.l < 1));
  t.deepEqual([...new Set(a.map((x) => x.i))].sort(), [3, 4, 5]); // hi is excluded, as in tune.randint
  t.deepEqual([...new Set(a.map((x) => x.c))].sort(), ['adam', 'rmsprop', 'sgd']);
  // log-uniform: half the draws below the geometric middle (1e-2); uniform would put 1% there
  const below = a.filter((x) => x.l < 1e-2).length / a.length;
  t.true(below > 0.4 && below < 0.6, `${below} of the draws below 1e-2`);
  t.deepEqual(configs(space, { seed: 42, samples: 400 }), a);
  t.notDeepEqual(configs(space, { seed: 43, samples: 400 }), a);
});

test.serial('a grid search finds the best config for max and for min; ties go to the earlier trial', async (t) => {
  const space = { x: grid([1, 2, 3, 4, 5]), y: grid([-2, -1, 0]) };
  const seen: Array<Trial<{ x: number; y: number }, { score: number; loss: number }>> = [];
  const max = await search(paraboloid, space, { metric: 'score', mode: 'max', onTrial: (tr) => seen.push(tr) });
  t.is(max.trials.length, 15);
  t.deepEqual(
    max.trials.map((tr) => tr.index),
    [...Array(15).keys()],
  );
  t.deepEqual(
    max.trials.map((tr) => tr.config),
    configs(space, { seed: max.seed }),
  );
  t.deepEqual(max.best.config, { x: 3, y: -1 });
  t.true(max.best.result.score === 0 && max.best.result.loss === 0);
  t.is(seen.length, 15);
  t.true(max.trials.every((tr) => tr.error === undefined && tr.seconds > 0));

  const min = await search(paraboloid, space, { metric: 'loss', mode: 'min' });
  t.deepEqual(min.best.config, { x: 3, y: -1 });
  // the lowest score (-5) is at four corners: the first of them in trial order wins
  const worst = await search(paraboloid, space, { metric: 'score', mode: 'min' });
  t.deepEqual(worst.best.config, { x: 1, y: -2 });
  t.is(worst.best.result.score, -5);
  // even when the earlier trial ends last
  t.is((await search(tied, { x: grid([1, 2, 3]) }, { metric: 'score', mode: 'max' })).best.index, 0);
});

test.serial('a random search draws the configs its seed gives and returns the best of them', async (t) => {
  const space = { x: uniform(0, 6), y: uniform(-3, 1) };
  const r = await search(paraboloid, space, { metric: 'score', mode: 'max', samples: 12, seed: 7 });
  t.is(r.seed, 7);
  t.deepEqual(
    r.trials.map((tr) => tr.config),
    configs(space, { seed: 7, samples: 12 }),
  );
  const scores = r.trials.map((tr) => paraboloid.fn(tr.config).score);
  t.deepEqual(
    r.trials.map((tr) => tr.result!.score),
    scores,
  );
  t.is(r.best.result.score, Math.max(...scores));
  t.is(r.best.index, scores.indexOf(Math.max(...scores)));
  const again = await search(paraboloid, space, { metric: 'score', mode: 'max', samples: 12, seed: 7 });
  t.deepEqual(again.best.config, r.best.config);
});

test.serial('a trial that throws is recorded with its error and the search goes on; NaN never wins', async (t) => {
  let ended = 0;
  const r = await search(
    flaky,
    { x: grid([0, 1, 2, 3, 4, 5]) },
    { metric: 'score', mode: 'max', onTrial: () => ended++ },
  );
  t.is(ended, 6);
  const cursed = r.trials[2];
  t.is(cursed.result, undefined);
  t.true(cursed.error instanceof TaskError);
  t.is((cursed.error as TaskError).remoteName, 'RangeError');
  t.regex(cursed.error!.message, /x = 2 is cursed/);
  t.true(Number.isNaN(r.trials[5].result!.score));
  t.deepEqual(r.best.config, { x: 3 });
  t.is(r.trials.filter((tr) => tr.error).length, 1);
  // NaN compares false both ways: ending first, it must not stick as the best
  const min = await search(flaky, { x: grid([5, 4, 2]) }, { metric: 'score', mode: 'min', maxConcurrent: 1 });
  t.deepEqual(min.best.config, { x: 4 });
});

test.serial('when every trial fails, search throws SearchError with the first cause', async (t) => {
  const e = await t.throwsAsync(search(alwaysFails, { x: grid([1, 2, 3]) }, { metric: 'score', mode: 'max' }), {
    instanceOf: SearchError,
  });
  t.regex(e!.message, /every one of the 3 trials failed; the first \(trial 0, config \{"x":1\}\): failed at x = 1/);
  t.true(e!.cause instanceof TaskError);
});

test.serial('trials run at the same time as tasks on different workers; maxConcurrent bounds how many', async (t) => {
  // Each trial waits until two have started: run one at a time, the first would time out and fail. The strategy
  // gives a resource shape no earlier test used: a worker lease whose last task ran under 10 ms takes several tasks
  // at once, which could queue these behind one another on one worker.
  const dir = tempDir(t);
  const r = await search(
    where.options({ schedulingStrategy: 'SPREAD' }),
    { x: grid([0, 1, 2, 3]), dir, meet: 2, ms: 100 },
    { metric: 'x', mode: 'max' },
  );
  t.deepEqual(
    r.trials.filter((tr) => tr.error).map((tr) => tr.error!.message),
    [],
  );
  t.true(new Set(r.trials.map((tr) => tr.result!.pid)).size >= 2);
  t.true(r.trials.every((tr) => tr.result!.pid !== process.pid));

  const one = await search(
    where,
    { x: grid([0, 1, 2, 3]), dir: tempDir(t), meet: 1, ms: 100 },
    { metric: 'x', mode: 'max', maxConcurrent: 1 },
  );
  const spans = one.trials.map((tr) => tr.result!).sort((a, b) => a.start - b.start);
  t.deepEqual(
    spans.map((s) => s.x),
    [0, 1, 2, 3],
  ); // submitted in trial order
  for (let i = 1; i < spans.length; i++)
    t.true(spans[i].start >= spans[i - 1].end, `trial ${i} started before trial ${i - 1} ended`);
});

test.serial('misuse fails at the call with a clear error', async (t) => {
  t.throws(() => grid([]), { instanceOf: UsageError, message: /non-empty/ });
  t.throws(() => choice([]), { instanceOf: UsageError });
  t.throws(() => uniform(1, 1), { instanceOf: UsageError, message: /lo < hi/ });
  t.throws(() => uniform(0, Infinity), { instanceOf: UsageError });
  t.throws(() => logUniform(0, 1), { instanceOf: UsageError, message: /lo > 0/ });
  t.throws(() => randInt(5, 2), { instanceOf: UsageError });
  t.throws(() => randInt(0.5, 2), { instanceOf: UsageError });
  const space = { x: grid([1, 2]) };
  const opts = { metric: 'score', mode: 'max' } as const;
  await t.throwsAsync(search(flaky, space, { ...opts, samples: 0 }), {
    instanceOf: UsageError,
    message: /samples must be a positive integer/,
  });
  await t.throwsAsync(search(flaky, space, { ...opts, samples: 1.5 }), { instanceOf: UsageError });
  await t.throwsAsync(search(flaky, space, { ...opts, maxConcurrent: 0 }), {
    instanceOf: UsageError,
    message: /maxConcurrent/,
  });
  await t.throwsAsync(search(flaky, space, { ...opts, seed: 0.5 }), { instanceOf: UsageError, message: /seed/ });
  await t.throwsAsync(search(flaky, space, { ...opts, mode: 'best' as 'max' }), {
    instanceOf: UsageError,
    message: /mode/,
  });
  await t.throwsAsync(search(flaky.fn as never, space, opts), {
    instanceOf: UsageError,
    message: /takes a remote function .*got a plain function/,
  });
  await t.throwsAsync(search(flaky, [1, 2] as never, opts), { instanceOf: UsageError, message: /plain object/ });
  await t.throwsAsync(search(wrongKeys, space, { metric: 'score' as never, mode: 'max' }), {
    instanceOf: UsageError,
    message: /returned no number under metric 'score' \(its keys: accuracy\)/,
  });
});

// Checked by the typecheck, never run: the config type comes from the space, metric names a numeric result key.
export async function typeChecks(): Promise<void> {
  const r = await search(
    paraboloid,
    { x: grid([1, 2]), y: uniform(0, 1), extra: { k: choice(['a', 'b']) } },
    { metric: 'loss', mode: 'min' },
  );
  const k: 'a' | 'b' = r.best.config.extra.k;
  const loss: number = r.best.result.loss;
  void [k, loss];
  // @ts-expect-error: not a key of the trial's result
  await search(paraboloid, { x: grid([1]), y: 0 }, { metric: 'accuracy', mode: 'max' });
  // @ts-expect-error: the space lacks y, which the trial needs
  await search(paraboloid, { x: grid([1]) }, { metric: 'score', mode: 'max' });
  // @ts-expect-error: y would be a string
  await search(paraboloid, { x: grid([1]), y: choice(['1']) }, { metric: 'score', mode: 'max' });
  // @ts-expect-error: a plain function is not a remote one
  await search((c: { x: number }) => ({ score: c.x }), { x: grid([1]) }, { metric: 'score', mode: 'max' });
}
