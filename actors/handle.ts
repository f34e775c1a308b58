// Actor handles: typed proxies whose methods send calls to the actor and return ObjectRefs.
// A handle is plain data underneath (id, class name), so it can be passed to tasks and other actors.
import { currentCore } from '../runtime/core/core.ts';
import { registerExtension, ExtType } from '../runtime/base/codec.ts';
import type { RemoteArgs } from '../runtime/api/remote-function.ts';
import type { ObjectRef } from '../object-store/object-ref.ts';
import type { LIFECYCLE } from '../runtime/core/actor-instance.ts';

type Method = (...args: any[]) => any;

type Lifecycle = (typeof LIFECYCLE)[number];

/** Public methods of T (names starting with '_' stay private to the actor, and lifecycle hooks are the runtime's). */
export type ActorMethodNames<T> = {
  [K in keyof T]-?: K extends `_${string}` | Lifecycle
    ? never
    : K extends string
      ? T[K] extends Method
        ? K
        : never
      : never;
}[keyof T];

/** A remote actor: every method takes the same arguments (each a value or an ObjectRef of it) and returns an ObjectRef
 * of its awaited result. */
export type ActorHandle<T> = {
  readonly [K in ActorMethodNames<T>]: T[K] extends (...args: infer A) => infer R
    ? (...args: RemoteArgs<A>) => ObjectRef<Awaited<R>>
    : never;
} & {
  readonly actorId: string;
  readonly className: string;
};

/** What a handle is made of. */
export class HandleData {
  constructor(
    readonly actorId: string,
    readonly className: string,
    /** Calls in flight when the actor dies are re-sent this many times (-1: always). */
    readonly maxTaskRetries: number,
    /** Calls this process may queue while the actor is (re)starting; undefined: the default. */
    readonly maxPendingCalls?: number,
  ) {}
}

// Properties a handle answers itself instead of turning them into remote calls: `await handle` must not call then().
const OWN = new Set([
  'actorId',
  'className',
  'maxTaskRetries',
  'maxPendingCalls',
  'then',
  'toJSON',
  'constructor',
  'toString',
  'valueOf',
]);

export function makeHandle<T>(data: HandleData): ActorHandle<T> {
  const methods = new Map<string, (...args: unknown[]) => ObjectRef<unknown>>();
  return new Proxy(data, {
    get(target, prop) {
      if (typeof prop === 'symbol' || OWN.has(prop)) {
        if (prop === 'toString') return () => `ActorHandle(${target.className} ${target.actorId})`;
        if (prop === 'toJSON') return () => ({ actor: target.className, actorId: target.actorId });
        return (target as unknown as Record<string | symbol, unknown>)[prop];
      }
      let m = methods.get(prop);
      if (!m) {
        m = (...args: unknown[]) =>
          currentCore().callActor(target.actorId, prop, args, target.maxTaskRetries, target.maxPendingCalls);
        methods.set(prop, m);
      }
      return m;
    },
  }) as unknown as ActorHandle<T>;
}

registerExtension<HandleData, [string, string, number, number?]>({
  Class: HandleData,
  type: ExtType.actorHandle,
  write: (h) =>
    h.maxPendingCalls === undefined
      ? [h.actorId, h.className, h.maxTaskRetries]
      : [h.actorId, h.className, h.maxTaskRetries, h.maxPendingCalls],
  read: ([id, cls, retries, pending]) =>
    makeHandle(new HandleData(id, cls, retries, pending ?? undefined)) as unknown as HandleData,
});
