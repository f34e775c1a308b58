// `remote(opts, fn)`: a function that runs on a worker. Workers find it by module URL + export name,
// so remote functions must be exported from a module (not the script that calls init()).
import { pathToFileURL } from 'node:url';
import { currentClient, type TaskOptions, type FunctionRef } from './client.ts';
import { UsageError } from './errors.ts';
import { normalizeRequest } from './scheduler.ts';
import type { ObjectRef } from '../object-store/object-ref.ts';

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

const TASK_OPTION_KEYS = new Set(['numCpus', 'numGpus', 'memory', 'resources', 'schedulingStrategy', 'name']);

/** Where a remote function was defined, and under which export name its module has it. */
interface Definition {
  url: string;
  /** Undefined until the module has finished loading and we looked. */
  exportName?: string;
  /** Settles once we looked: the export name, or undefined if the module does not export the function. */
  lookup: Promise<string | undefined>;
  looked: boolean;
}

export function remote<A extends unknown[], R>(fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote<A extends unknown[], R>(opts: TaskOptions, fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote<A extends unknown[], R>(a: TaskOptions | ((...args: A) => R), b?: (...args: A) => R): RemoteFunction<A, R> {
  const [opts, fn] = typeof a === 'function' ? [{}, a] : [a, b];
  if (typeof fn !== 'function') throw new TypeError('remote() takes a function: remote(fn) or remote({ numCpus: 1 }, fn)');
  checkOptions(opts);
  const site: { def?: Definition } = {};
  const rf = build(fn, opts, site);
  site.def = defineSite(rf);
  return rf;
}

function build<A extends unknown[], R>(fn: (...args: A) => R, opts: TaskOptions, site: { def?: Definition }): RemoteFunction<A, R> {
  return {
    fn,
    remote(...args: RemoteArgs<A>): ObjectRef<Awaited<R>> {
      const d = site.def!;
      const notExported = () => new UsageError(`remote function ${fn.name || '(anonymous)'} defined in ${d.url} is not an export of that module: export it, and keep remote functions in a module other than the script that calls init()`);
      const ref = (exportName: string): FunctionRef => ({ url: d.url, exportName, name: opts.name ?? (fn.name || exportName) });
      if (d.exportName !== undefined) return currentClient().submitTask<Awaited<R>>(ref(d.exportName), args, opts);
      if (d.looked) throw notExported();
      // Called while its module is still loading (a dynamic import, a task's first call): go once we know the name.
      return currentClient().submitTask<Awaited<R>>(d.lookup.then((name) => { if (name === undefined) throw notExported(); return ref(name); }), args, opts);
    },
    options(more: TaskOptions): RemoteFunction<A, R> {
      checkOptions(more);
      return build(fn, { ...opts, ...more }, site);
    },
  };
}

/** Validates at definition time, so a typo fails where it was written. */
function checkOptions(opts: TaskOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new TypeError('remote options must be an object');
  for (const k of Object.keys(opts)) {
    if (!TASK_OPTION_KEYS.has(k)) throw new TypeError(`unknown remote option '${k}' (known: ${[...TASK_OPTION_KEYS].join(', ')})`);
  }
  normalizeRequest({ numCpus: opts.numCpus, numGpus: opts.numGpus, memory: opts.memory, resources: opts.resources }, 1);
}

/** The module that called remote(): the first stack frame outside this file. */
function defineSite(rf: RemoteFunction<any, any>): Definition {
  const here = import.meta.url;
  const frames = (new Error().stack ?? '').split('\n').slice(1);
  let url: string | undefined;
  for (const f of frames) {
    const m = /\(?((?:file:\/\/)?\/[^()]*?\.[cm]?[jt]sx?)(?:\?[^:)]*)?:\d+:\d+\)?\s*$/.exec(f);
    if (!m) continue;
    const u = m[1].startsWith('file://') ? m[1] : pathToFileURL(m[1]).href;
    if (u === here) continue;
    url = u;
    break;
  }
  if (!url) throw new UsageError('remote(): cannot tell which module defines this function; define remote functions at the top level of a module');
  const def: Definition = { url, looked: false, lookup: Promise.resolve(undefined) };
  // The module is still evaluating; this import settles once it has finished, usually before user code calls .remote().
  def.lookup = import(url).then((mod: Record<string, unknown>) => {
    for (const [name, v] of Object.entries(mod)) if (v === rf) def.exportName = name;
    return def.exportName;
  }, () => undefined).finally(() => { def.looked = true; });
  return def;
}
