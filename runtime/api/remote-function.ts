// `remote(opts, fn)`: a function that runs on a worker. Workers find it by module URL + export name,
// so remote functions must be exported from a module (not the script that calls init()).
import { currentCore, type TaskOptions, type FunctionRef } from '../core/core.ts';
import { UsageError } from '../base/errors.ts';
import { keysOf } from '../base/option-keys.ts';
import { normalizeRequest, checkStrategy } from '../scheduling/placement.ts';
import { defineSite, type Definition } from '../base/definition-site.ts';
import type { ObjectRef } from '../../object-store/object-ref.ts';

/** Each argument may be the value or an ObjectRef of it. */
export type RemoteArgs<A extends unknown[]> = { [K in keyof A]: A[K] | ObjectRef<A[K]> };

export interface RemoteFunction<A extends unknown[], R> {
  /** Runs the function on a worker; the result (awaited if it is a promise) comes back as an ObjectRef. */
  remote(...args: RemoteArgs<A>): ObjectRef<Awaited<R>>;
  /** The same function with other options (resources, strategy, name). */
  options(opts: TaskOptions): RemoteFunction<A, R>;
  /** The plain function, for local calls and tests. */
  readonly fn: (...args: A) => R;
}

const TASK_OPTION_KEYS = keysOf<TaskOptions>({
  numCpus: true,
  numGpus: true,
  memory: true,
  resources: true,
  schedulingStrategy: true,
  name: true,
  maxRetries: true,
  retryExceptions: true,
});

export function remote<A extends unknown[], R>(fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote<A extends unknown[], R>(opts: TaskOptions, fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote<A extends unknown[], R>(
  a: TaskOptions | ((...args: A) => R),
  b?: (...args: A) => R,
): RemoteFunction<A, R> {
  const [opts, fn] = typeof a === 'function' ? [{}, a] : [a, b];
  if (typeof fn !== 'function')
    throw new UsageError('remote() takes a function: remote(fn) or remote({ numCpus: 1 }, fn)');
  checkOptions(opts);
  const site: { def?: Definition } = {};
  const rf = build(fn, opts, site);
  site.def = defineSite(rf, fn.name ? `remote function ${fn.name}` : 'a remote function');
  return rf;
}

function build<A extends unknown[], R>(
  fn: (...args: A) => R,
  opts: TaskOptions,
  site: { def?: Definition },
): RemoteFunction<A, R> {
  return {
    fn,
    remote(...args: RemoteArgs<A>): ObjectRef<Awaited<R>> {
      const d = site.def!;
      if (d.exportName !== undefined)
        return currentCore().submitTask<Awaited<R>>(functionRef(fn, opts, d.url, d.exportName), args, opts);
      if (d.looked) throw notExported(fn, d.url);
      // Called while its module is still loading (a dynamic import, a task's first call): go once we know the name.
      return currentCore().submitTask<Awaited<R>>(
        d.lookup.then((name) => {
          if (name === undefined) throw notExported(fn, d.url);
          return functionRef(fn, opts, d.url, name);
        }),
        args,
        opts,
      );
    },
    options(more: TaskOptions): RemoteFunction<A, R> {
      checkOptions(more);
      return build(fn, { ...opts, ...more }, site);
    },
  };
}

// Not closures made per call: the calls are hot.
function functionRef(fn: Function, opts: TaskOptions, url: string, exportName: string): FunctionRef {
  return { url, exportName, name: opts.name ?? (fn.name || exportName) };
}

function notExported(fn: Function, url: string): UsageError {
  return new UsageError(
    `remote function ${fn.name || '(anonymous)'} defined in ${url} is not an export of that module: export it, and ` +
      `keep remote functions in a module other than the script that calls init()`,
  );
}

/** Validates at definition time, so a typo fails where it was written. */
function checkOptions(opts: TaskOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new UsageError('remote options must be an object');
  for (const k of Object.keys(opts)) {
    if (!TASK_OPTION_KEYS.has(k))
      throw new UsageError(`unknown remote option '${k}' (known: ${[...TASK_OPTION_KEYS].join(', ')})`);
  }
  normalizeRequest({ numCpus: opts.numCpus, numGpus: opts.numGpus, memory: opts.memory, resources: opts.resources }, 1);
  checkStrategy(opts.schedulingStrategy);
  if (opts.maxRetries !== undefined && (!Number.isInteger(opts.maxRetries) || opts.maxRetries < -1)) {
    throw new UsageError(
      `maxRetries must be an integer: 0 or more, or -1 for no limit; got ${String(opts.maxRetries)}`,
    );
  }
  const rx = opts.retryExceptions;
  if (rx !== undefined && typeof rx !== 'boolean' && !(Array.isArray(rx) && rx.every((n) => typeof n === 'string'))) {
    throw new UsageError(
      'retryExceptions must be true, false, or a list of error class names such as ["TimeoutError"]',
    );
  }
}
