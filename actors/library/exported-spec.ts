// Training jobs and inference models are specs exported from a module of the user's: the driver declares one, and
// the actors that use it (replicas, parameter servers, serving replicas) import it by module URL and export name.
import { defineSite, importJobModule, sharedUrl, UsageError, type Definition } from './runtime.ts';

export interface ExportedSpec<S> {
  readonly spec: S;
  /** Where actors load it from. */
  readonly def: Definition;
}

export interface SpecRef {
  url: string;
  exportName: string;
}

/** Wraps a checked spec and records the module that declares it. */
export function declareSpec<S>(spec: S, what: string): ExportedSpec<S> {
  const x = { spec } as { spec: S; def: Definition };
  Object.defineProperty(x, 'def', { value: defineSite(x, what), enumerable: false });
  return x;
}

/** Where actors import it from, once its module has finished loading. `what` names the kind ('training job');
 * `misuse` is the error for anything else ("train() takes a trainingJob(...)"). */
export async function specRef(x: ExportedSpec<unknown>, what: string, misuse: string): Promise<SpecRef> {
  if (!x?.spec || !x.def) throw new UsageError(misuse);
  const exportName = x.def.exportName ?? (await x.def.lookup);
  if (exportName === undefined)
    throw new UsageError(`the ${what} defined in ${x.def.url} is not an export of that module: export it`);
  return { url: sharedUrl(x.def.url), exportName };
}

/** The spec, imported in an actor's process. `ref` comes from the actor's constructor arguments, which anyone who
 * creates the actor chooses: in a worker, importJobModule() loads only a file: module inside the job's registered
 * root (never troupe's own modules, never data: or other URLs), checked before anything of it runs. */
export async function loadSpec<S>(ref: SpecRef, what: string): Promise<S> {
  if (typeof ref?.url !== 'string' || typeof ref.exportName !== 'string')
    throw new UsageError(`a ${what} is named by { url, exportName }, both strings`);
  const mod = (await importJobModule(ref.url)) as Record<string, { spec?: S } | undefined>;
  const spec = Object.hasOwn(mod, ref.exportName) ? mod[ref.exportName]?.spec : undefined;
  if (!spec) throw new UsageError(`${ref.url} export '${ref.exportName}' is not a ${what}`);
  return spec;
}
