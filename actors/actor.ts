// The base class of remote actors. Its statics give `Trainer.remote(...)` and `Trainer.options({...}).remote(...)`
// their types: a decorator cannot add typed statics, a base class can.
import { currentCore, type ActorOptions, type FunctionRef } from '../runtime/core/core.ts';
import { UsageError } from '../runtime/base/errors.ts';
import { REMOTE_CLASS, constructingActorId, saveCheckpointOf } from '../runtime/core/actor-instance.ts';
import type { RemoteArgs } from '../runtime/api/remote-function.ts';
import type { Definition } from '../runtime/base/definition-site.ts';
import { makeHandle, HandleData, type ActorHandle } from './handle.ts';
import { checkActorOptions } from './options.ts';

export type ActorClass = abstract new (...args: any) => Actor;

/** What @remote records on a class. */
export interface RemoteClassInfo {
  options: ActorOptions;
  def: Definition;
}

/** Optional hooks an actor class may define; the runtime calls them, remote callers cannot.
 * - `onStart()`: after construction (and restore), before the first call.
 * - `onStop()`: when it is stopped (kill, its supervisor), within the stop's grace time (a child spec's shutdownMs).
 * - `checkpoint()` / `restore(state)`: the state to save, and how a restarted instance takes it back. */
export interface ActorLifecycle<S = unknown> {
  onStart?(): void | Promise<void>;
  onStop?(): void | Promise<void>;
  checkpoint?(): S | Promise<S>;
  restore?(state: S): void | Promise<void>;
}

export abstract class Actor {
  /** This actor's id, the same across restarts (undefined in an instance made with plain `new`). */
  declare readonly actorId: string;

  constructor() {
    Object.defineProperty(this, 'actorId', { value: constructingActorId(), enumerable: false, configurable: true });
  }

  /** Saves `checkpoint()` now, in order with this actor's calls when called through a handle. A restarted instance
   * gets the last saved state in `restore()`. */
  async saveCheckpoint(): Promise<void> {
    await saveCheckpointOf(this);
  }
  /** Creates the actor on the cluster. Returns at once; calls made before it is up wait for it. */
  static remote<C extends ActorClass>(
    this: C,
    ...args: RemoteArgs<ConstructorParameters<C>>
  ): ActorHandle<InstanceType<C>> {
    return create(this, {}, args);
  }

  /** The same class with other options for this creation (name, resources, restarts, …). */
  static options<C extends ActorClass>(
    this: C,
    opts: ActorOptions,
  ): { remote(...args: RemoteArgs<ConstructorParameters<C>>): ActorHandle<InstanceType<C>> } {
    checkActorOptions(opts);
    return { remote: (...args) => create(this, opts, args) };
  }
}

/** Makes one of troupe's own actor classes remote: its module is known, so nothing looks at the call stack. */
export function libraryActor(cls: ActorClass, url: string, exportName: string): void {
  const info: RemoteClassInfo = {
    options: {},
    def: { url, exportName, looked: true, lookup: Promise.resolve(exportName) },
  };
  Object.defineProperty(cls, REMOTE_CLASS, { value: info, enumerable: false });
}

/** What @remote recorded on a class; throws UsageError for any other class. */
export function remoteClassInfo(cls: ActorClass): RemoteClassInfo {
  const info = (cls as unknown as Record<symbol, RemoteClassInfo | undefined>)[REMOTE_CLASS];
  if (typeof cls !== 'function' || !info || !Object.hasOwn(cls, REMOTE_CLASS)) {
    throw new UsageError(
      `${(cls as { name?: string })?.name ?? String(cls)} is not a remote actor class: decorate it with ` +
        `@remote({...}) and export it from its module`,
    );
  }
  return info;
}

/** Where workers load the class from: known now, or once its module has finished loading. */
export function classRef(cls: ActorClass): FunctionRef | Promise<FunctionRef> {
  const d = remoteClassInfo(cls).def;
  const notExported = () =>
    new UsageError(
      `actor class ${cls.name} defined in ${d.url} is not an export of that module: export it, and keep actor ` +
        `classes out of the script that calls init()`,
    );
  const ref = (exportName: string) => ({ url: d.url, exportName, name: cls.name });
  if (d.exportName === undefined && d.looked) throw notExported();
  return d.exportName !== undefined
    ? ref(d.exportName)
    : d.lookup.then((n) => {
        if (n === undefined) throw notExported();
        return ref(n);
      });
}

function create<C extends ActorClass>(cls: C, more: ActorOptions, args: unknown[]): ActorHandle<InstanceType<C>> {
  const opts = { ...remoteClassInfo(cls).options, ...more, className: cls.name };
  const actorId = currentCore().createActor(classRef(cls), args, opts);
  return makeHandle<InstanceType<C>>(new HandleData(actorId, cls.name, opts.maxTaskRetries ?? 0, opts.maxPendingCalls));
}
