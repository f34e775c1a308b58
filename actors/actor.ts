// The base class of remote actors. Its statics give `Trainer.remote(...)` and `Trainer.options({...}).remote(...)`
// their types: a decorator cannot add typed statics, a base class can.
import { currentClient, type ActorOptions } from '../runtime/client.ts';
import { UsageError } from '../runtime/errors.ts';
import { REMOTE_CLASS } from '../runtime/actor-host.ts';
import type { RemoteArgs } from '../runtime/remote-function.ts';
import type { Definition } from '../runtime/definition-site.ts';
import { makeHandle, HandleData, type ActorHandle } from './handle.ts';
import { checkActorOptions } from './options.ts';

type ActorClass = abstract new (...args: any) => Actor;

/** What @remote records on a class. */
export interface RemoteClassInfo {
  options: ActorOptions;
  def: Definition;
}

export abstract class Actor {
  /** Creates the actor on the cluster. Returns at once; calls made before it is up wait for it. */
  static remote<C extends ActorClass>(this: C, ...args: RemoteArgs<ConstructorParameters<C>>): ActorHandle<InstanceType<C>> {
    return create(this, {}, args);
  }

  /** The same class with other options for this creation (name, resources, restarts, …). */
  static options<C extends ActorClass>(this: C, opts: ActorOptions): { remote(...args: RemoteArgs<ConstructorParameters<C>>): ActorHandle<InstanceType<C>> } {
    checkActorOptions(opts);
    return { remote: (...args) => create(this, opts, args) };
  }
}

function create<C extends ActorClass>(cls: C, more: ActorOptions, args: unknown[]): ActorHandle<InstanceType<C>> {
  const info = (cls as unknown as Record<symbol, RemoteClassInfo | undefined>)[REMOTE_CLASS];
  if (!info || !Object.prototype.hasOwnProperty.call(cls, REMOTE_CLASS)) {
    throw new UsageError(`${cls.name} is not a remote actor class: decorate it with @remote({...}) and export it from its module`);
  }
  const opts = { ...info.options, ...more, className: cls.name };
  const d = info.def;
  const notExported = () => new UsageError(`actor class ${cls.name} defined in ${d.url} is not an export of that module: export it, and keep actor classes out of the script that calls init()`);
  const ref = (exportName: string) => ({ url: d.url, exportName, name: cls.name });
  if (d.exportName === undefined && d.looked) throw notExported();
  const target = d.exportName !== undefined ? ref(d.exportName) : d.lookup.then((n) => { if (n === undefined) throw notExported(); return ref(n); });
  const actorId = currentClient().createActor(target, args, opts);
  return makeHandle<InstanceType<C>>(new HandleData(actorId, cls.name, opts.maxTaskRetries ?? 0));
}
