// `remote`: one word for remote functions and actor classes, as in Ray.
//   export const f = remote({ numCpus: 1 }, (x: number) => x * 2);
//   @remote({ numGpus: 1, maxRestarts: 2 }) export class Trainer extends Actor { … }
//   export const Trainer = remote({ numGpus: 1 }, class Trainer extends Actor { … });  (no decorators: plain JS)
import { remote as remoteFunction, type RemoteFunction } from '../runtime/api/remote-function.ts';
import { defineSite } from '../runtime/base/definition-site.ts';
import { REMOTE_CLASS } from '../runtime/core/actor-instance.ts';
import type { TaskOptions, ActorOptions } from '../runtime/core/core.ts';
import { Actor, type RemoteClassInfo } from './actor.ts';
import { checkActorOptions } from './options.ts';
import { UsageError } from '../runtime/base/errors.ts';

type ActorClass = abstract new (...args: any) => Actor;
export type ActorDecorator = <C extends ActorClass>(value: C, context: ClassDecoratorContext<C>) => void;

/** Without decorators (plain JavaScript): `export const Counter = remote({ maxRestarts: 1 }, class Counter extends
 * Actor { … })` makes the class remote and returns it. */
export function remote<C extends ActorClass>(cls: C): C;
export function remote<C extends ActorClass>(opts: ActorOptions, cls: C): C;
export function remote<A extends unknown[], R>(fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote<A extends unknown[], R>(opts: TaskOptions, fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote(opts: ActorOptions): ActorDecorator;
export function remote(a: unknown, b?: unknown): unknown {
  const cls = isActorClass(a) ? a : isActorClass(b) ? b : undefined;
  if (cls) {
    const opts = (cls === a ? {} : (a ?? {})) as ActorOptions;
    checkActorOptions(opts);
    makeRemote(cls, opts);
    return cls;
  }
  if (typeof a === 'function' || typeof b === 'function') return remoteFunction(a as never, b as never);
  const opts = (a ?? {}) as ActorOptions;
  checkActorOptions(opts);
  return ((value: ActorClass, context: ClassDecoratorContext) => {
    if (context?.kind !== 'class')
      throw new UsageError('@remote(options) decorates classes; for functions use remote(options, fn)');
    makeRemote(value, opts);
  }) satisfies ActorDecorator;
}

const isActorClass = (v: unknown): v is ActorClass => typeof v === 'function' && v.prototype instanceof Actor;

function makeRemote(cls: ActorClass, opts: ActorOptions): void {
  const info: RemoteClassInfo = { options: opts, def: defineSite(cls, `actor class ${cls.name}`) };
  Object.defineProperty(cls, REMOTE_CLASS, { value: info, enumerable: false });
}
