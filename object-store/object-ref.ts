// A reference to a value that lives somewhere in the cluster. Awaitable: `await ref` is `get(ref)`.
import { registerExtension, ExtType } from '../runtime/codec.ts';

type Resolver = (ref: ObjectRef<unknown>) => Promise<unknown>;
let resolver: Resolver | undefined;
let onEncode: ((ref: ObjectRef<unknown>) => void) | undefined;

/** Told whenever a ref is serialized: a ref that leaves its process may be borrowed, so its owner keeps the object. */
export function setRefEncodeHook(hook: ((ref: ObjectRef<unknown>) => void) | undefined): void {
  onEncode = hook;
}

/** The process's runtime plugs in how refs are resolved (owner lookup, store reads). */
export function setRefResolver(r: Resolver | undefined): void {
  resolver = r;
}

export class ObjectRef<T = unknown> implements PromiseLike<T> {
  /** Phantom: carries the value type for `get` and for typed arguments. */
  declare readonly __value?: T;

  constructor(
    /** Cluster-unique id. */
    readonly id: string,
    /** Process that created the ref and answers where its value is. */
    readonly owner: string,
  ) {}

  then<A = T, B = never>(onFulfilled?: ((v: T) => A | PromiseLike<A>) | null, onRejected?: ((e: any) => B | PromiseLike<B>) | null): Promise<A | B> {
    if (!resolver) return Promise.reject(new Error('troupe is not initialized: call init() first')).then(onFulfilled, onRejected);
    return (resolver(this) as Promise<T>).then(onFulfilled, onRejected);
  }

  toString(): string {
    return `ObjectRef(${this.id})`;
  }

  toJSON(): { objectRef: string } {
    return { objectRef: this.id };
  }
}

registerExtension<ObjectRef, [string, string]>({
  Class: ObjectRef,
  type: ExtType.objectRef,
  write: (r) => {
    onEncode?.(r);
    return [r.id, r.owner];
  },
  read: ([id, owner]) => new ObjectRef(id, owner),
});
