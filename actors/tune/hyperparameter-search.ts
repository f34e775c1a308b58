// Hyperparameter search, as in Ray Tune: a space of values, a remote function that trains with one config and
// returns its metrics, and the best config by one metric. Trials are plain tasks, so the scheduler places them across
// the cluster by the resources the function asks for; a trial that throws is recorded and the search goes on.
import { randomInt } from 'node:crypto';
import { seededRandom } from '../library/seeded-random.ts';
import {
  TroupeError,
  UsageError,
  registerErrorClass,
  requireInit,
  type RemoteFunction,
  asError,
} from '../library/runtime.ts';

/** Every trial failed (or none gave a number for the metric); `cause` is the first trial's error. */
export class SearchError extends TroupeError {}
registerErrorClass(SearchError);

/** Values that are all tried: several grids in one space give their cartesian product (tune.grid_search). */
export class Grid<T> {
  constructor(readonly values: readonly T[]) {}
}

/** A value drawn afresh for each trial from `random()` in [0, 1). */
export class Sampler<T> {
  constructor(
    readonly description: string,
    readonly draw: (random: () => number) => T,
  ) {}
  toString(): string {
    return this.description;
  }
}

export type Domain<T> = Grid<T> | Sampler<T>;

/** Keys to values: domains, plain constants, or nested spaces (plain objects). */
export type Space = { readonly [key: string]: unknown };

/** The config a trial gets for a space: each domain replaced by one of its values. */
export type ConfigOf<S> = {
  -readonly [K in keyof S]: S[K] extends Domain<infer T>
    ? T
    : S[K] extends readonly unknown[] | ArrayBufferView | ((...a: never[]) => unknown)
      ? S[K]
      : S[K] extends object
        ? ConfigOf<S[K]>
        : S[K];
};

/** The keys of a trial's result that hold numbers: what `metric` may name. */
export type MetricOf<M> = { [K in keyof M]-?: M[K] extends number ? K : never }[keyof M] & string;

export interface SearchOptions<C, M> {
  /** The result key to rank trials by. */
  metric: MetricOf<M>;
  mode: 'max' | 'min';
  /** Random draws per grid point (default 1): the whole grid is repeated this many times, as tune's num_samples. */
  samples?: number;
  /** Trials submitted at once (default: all; the scheduler then runs as many as the cluster has room for). */
  maxConcurrent?: number;
  /** Seeds the random draws (a 32-bit integer): the same seed and space give the same configs. Default: random,
   * reported in the result. */
  seed?: number;
  /** After each trial ends, successful or not, in the order they end. */
  onTrial?(t: Trial<C, M>): void;
}

export interface Trial<C, M> {
  /** Its place in the order configs were made: grid points in order (the first grid key varies slowest), then
   * the same again for each further sample. */
  index: number;
  config: C;
  result?: M;
  /** What the trial threw (a TaskError, or WorkerDiedError when its worker died). */
  error?: Error;
  /** From submission to result, as the driver saw it: with more trials in flight than the cluster has room for,
   * this includes time queued for a worker. */
  seconds: number;
}

export interface SearchResult<C, M> {
  /** The trial with the highest (mode 'max') or lowest ('min') metric; NaN never wins, ties go to the earlier. */
  best: Trial<C, M> & { result: M };
  /** Every trial, in index order. */
  trials: Array<Trial<C, M>>;
  /** The seed the configs were drawn with. */
  seed: number;
}

/** Tries every value (cartesian product with the space's other grids). */
export function grid<const T>(values: readonly T[]): Grid<T> {
  if (!Array.isArray(values) || values.length === 0) throw new UsageError('grid() takes a non-empty array of values');
  return new Grid([...values]);
}

/** One of `values`, each equally likely. */
export function choice<const T>(values: readonly T[]): Sampler<T> {
  if (!Array.isArray(values) || values.length === 0) throw new UsageError('choice() takes a non-empty array of values');
  const v = [...values];
  return new Sampler(`choice(${v.length} values)`, (r) => v[Math.floor(r() * v.length)]);
}

/** A number in [lo, hi), uniformly. */
export function uniform(lo: number, hi: number): Sampler<number> {
  bounds('uniform', lo, hi);
  return new Sampler(`uniform(${lo}, ${hi})`, (r) => lo + r() * (hi - lo));
}

/** A number in [lo, hi) whose logarithm is uniform: each decade equally likely (learning rates, weight decay). */
export function logUniform(lo: number, hi: number): Sampler<number> {
  bounds('logUniform', lo, hi);
  if (lo <= 0) throw new UsageError(`logUniform(lo, hi) needs lo > 0, got ${lo}`);
  const a = Math.log(lo),
    b = Math.log(hi);
  // exp() may round up to hi itself: keep the interval half-open, as uniform's is.
  return new Sampler(`logUniform(${lo}, ${hi})`, (r) =>
    Math.min(Math.exp(a + r() * (b - a)), hi * (1 - Number.EPSILON)),
  );
}

/** An integer in [lo, hi): hi is excluded, as in tune.randint. */
export function randInt(lo: number, hi: number): Sampler<number> {
  bounds('randInt', lo, hi);
  if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi))
    throw new UsageError(`randInt(lo, hi) takes integers, got ${lo}, ${hi}`);
  return new Sampler(`randInt(${lo}, ${hi})`, (r) => lo + Math.floor(r() * (hi - lo)));
}

function bounds(what: string, lo: number, hi: number): void {
  if (typeof lo !== 'number' || typeof hi !== 'number' || !Number.isFinite(lo) || !Number.isFinite(hi)) {
    throw new UsageError(`${what}(lo, hi) takes two finite numbers, got ${String(lo)}, ${String(hi)}`);
  }
  if (lo >= hi) throw new UsageError(`${what}(lo, hi) needs lo < hi, got ${lo} >= ${hi}`);
}

/** Every config the search will try, in trial order: deterministic for a seed. */
export function configs<S extends Space>(space: S, o: { samples?: number; seed: number }): Array<ConfigOf<S>> {
  if (!isPlainObject(space))
    throw new UsageError('the search space must be a plain object of keys to values, grid(), choice(), ...');
  const samples = o.samples ?? 1;
  if (!Number.isSafeInteger(samples) || samples < 1)
    throw new UsageError(`samples must be a positive integer, got ${String(samples)}`);
  if (!Number.isInteger(o.seed)) throw new UsageError(`seed must be an integer, got ${String(o.seed)}`);
  const grids: Array<Grid<unknown>> = [];
  walk(space, (d) => {
    if (d instanceof Grid) grids.push(d);
    return undefined;
  });
  // First grid slowest, as nested loops over the keys in order would go.
  const points = grids.reduce<unknown[][]>((acc, g) => acc.flatMap((p) => g.values.map((v) => [...p, v])), [[]]);
  const random = seededRandom(o.seed);
  const out: Array<ConfigOf<S>> = [];
  for (let s = 0; s < samples; s++) {
    for (const point of points) {
      let g = 0;
      out.push(walk(space, (d) => (d instanceof Grid ? point[g++] : d.draw(random))) as ConfigOf<S>);
    }
  }
  return out;
}

/** A copy of the space with each domain replaced by `value(domain)`, keys in order: grids are met in the same
 * order every time. */
function walk(space: Space, value: (d: Domain<unknown>) => unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(space)) {
    out[k] = v instanceof Grid || v instanceof Sampler ? value(v) : isPlainObject(v) ? walk(v, value) : v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Space {
  if (typeof v !== 'object' || v === null) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/** Runs `trial` once per config of `space`, in parallel as tasks, and returns every trial and the best by `metric`.
 * A trial that throws is recorded and the others go on; if all fail, SearchError says so with the first cause.
 * A result without a number under `metric` is misuse: UsageError, and no more trials are submitted (those already
 * running finish on their own). */
export async function search<S extends Space, R>(
  trial: RemoteFunction<[NoInfer<ConfigOf<S>>], R>,
  space: S,
  o: SearchOptions<ConfigOf<S>, Awaited<R>>,
): Promise<SearchResult<ConfigOf<S>, Awaited<R>>> {
  type C = ConfigOf<S>;
  type M = Awaited<R>;
  const rf = trial as Partial<RemoteFunction<[C], R>> | undefined;
  if (typeof rf?.remote !== 'function' || typeof rf.options !== 'function' || typeof rf.fn !== 'function') {
    throw new UsageError(
      `search() takes a remote function (export const f = remote(fn) from its own module), got ` +
        `${typeof trial === 'function' ? 'a plain function' : String(trial)}`,
    );
  }
  if (typeof o?.metric !== 'string' || o.metric === '')
    throw new UsageError("search(): metric must name a key of the trial's result");
  if (o.mode !== 'max' && o.mode !== 'min')
    throw new UsageError(`search(): mode must be 'max' or 'min', got ${String(o.mode)}`);
  const maxConcurrent = o.maxConcurrent ?? Infinity;
  if (maxConcurrent !== Infinity && (!Number.isSafeInteger(maxConcurrent) || maxConcurrent < 1)) {
    throw new UsageError(`maxConcurrent must be a positive integer, got ${String(maxConcurrent)}`);
  }
  const seed = o.seed ?? randomInt(2 ** 32);
  const trials: Array<Trial<C, M>> = configs(space, { samples: o.samples, seed }).map((config, index) => ({
    index,
    config,
    seconds: 0,
  }));
  requireInit(); // not initialized: say so before anything else
  const metric: string = o.metric;
  const sign = o.mode === 'max' ? 1 : -1;
  let best: (Trial<C, M> & { result: M }) | undefined;
  let top = NaN;
  let next = 0,
    stopped = false;

  const runner = async (): Promise<void> => {
    while (!stopped && next < trials.length) {
      const t = trials[next++];
      const started = performance.now();
      const ref = trial.remote(t.config); // not exported, or an unsendable config: misuse, thrown to the caller
      try {
        t.result = await ref;
      } catch (e) {
        t.error = asError(e);
      }
      if (stopped) return; // another trial's misuse already ended the search
      t.seconds = (performance.now() - started) / 1000;
      if (!t.error) {
        const value = (t.result as Record<string, unknown> | null | undefined)?.[metric];
        if (typeof value !== 'number') {
          const has =
            typeof t.result === 'object' && t.result !== null
              ? `its keys: ${Object.keys(t.result).join(', ') || 'none'}`
              : `it returned ${String(t.result)}`;
          throw new UsageError(`trial ${t.index} returned no number under metric '${metric}' (${has})`);
        }
        if (!Number.isNaN(value) && (!best || sign * value > sign * top || (value === top && t.index < best.index))) {
          best = t as Trial<C, M> & { result: M };
          top = value;
        }
      }
      o.onTrial?.(t);
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(maxConcurrent, trials.length) }, () =>
      runner().catch((e: unknown) => {
        stopped = true;
        throw e;
      }),
    ),
  );

  if (!best) {
    const failed = trials.filter((t) => t.error);
    if (failed.length === trials.length) {
      const first = failed[0];
      throw new SearchError(
        `every one of the ${trials.length} trials failed; the first (trial ${first.index}, config ` +
          `${JSON.stringify(first.config)}): ${first.error!.message}`,
        { cause: first.error },
      );
    }
    throw new SearchError(
      `no trial's '${metric}' was a number: NaN in all ${trials.length - failed.length} that ` +
        `finished${failed.length ? `, ${failed.length} failed` : ''}`,
      { cause: failed[0]?.error },
    );
  }
  return { best, trials, seed };
}
