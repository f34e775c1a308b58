// `remote`: one word for remote functions and actor classes, as in Ray.
//   export const f = remote({ numCpus: 1 }, (x: number) => x * 2);
//   @remote({ numGpus: 1, maxRestarts: 2 }) export class Trainer extends Actor { … }
import { remote as remoteFunction, type RemoteFunction } from '../runtime/api/remote-function.ts';
import { defineSite } from '../runtime/base/definition-site.ts';
import { REMOTE_CLASS } from '../runtime/core/actor-instance.ts';
import type { TaskOptions, ActorOptions } from '../runtime/core/core.ts';
import type { Actor, RemoteClassInfo } from './actor.ts';
import { checkActorOptions } from './options.ts';
import { UsageError } from '../runtime/base/errors.ts';

type ActorClass = abstract new (...args: any) => Actor;
export type ActorDecorator = <C extends ActorClass>(value: C, context: ClassDecoratorContext<C>) => void;

export function remote<A extends unknown[], R>(fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote<A extends unknown[], R>(opts: TaskOptions, fn: (...args: A) => R): RemoteFunction<A, R>;
export function remote(opts: ActorOptions): ActorDecorator;
export function remote(a: unknown, b?: unknown): unknown {
  if (typeof a === 'function' || typeof b === 'function') return remoteFunction(a as never, b as never);
  const opts = (a ?? {}) as ActorOptions;
  checkActorOptions(opts);
  return ((value: ActorClass, context: ClassDecoratorContext) => {
    if (context?.kind !== 'class')
      throw new UsageError('@remote(options) decorates classes; for functions use remote(options, fn)');
    const info: RemoteClassInfo = { options: opts, def: defineSite(value, `actor class ${value.name}`) };
    Object.defineProperty(value, REMOTE_CLASS, { value: info, enumerable: false });
  }) satisfies ActorDecorator;
}
