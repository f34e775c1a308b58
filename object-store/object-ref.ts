// A reference to a value that lives somewhere in the cluster. Awaitable: `await ref` is `get(ref)`.
import { registerExtension, ExtType } from '../runtime/base/codec.ts';
import { UsageError } from '../runtime/base/errors.ts';

type Resolver = (ref: ObjectRef<unknown>) => Promise<unknown>;
let resolver: Resolver | undefined;
let onCreate: ((ref: ObjectRef<unknown>) => void) | undefined;
let collecting: ObjectRef<unknown>[] | undefined;
/** Set while withUntrackedRefs runs: the refs made meanwhile go here instead of to onCreate. */
let untracked: ObjectRef<unknown>[] | undefined;

/** Told of every ref made in this process (by the runtime or by decoding): the local half of reference counting. */
export function setRefCreateHook(hook: ((ref: ObjectRef<unknown>) => void) | undefined): void {
  onCreate = hook;
}

/** Runs `decode` with the refs it makes set aside, untracked: the caller tracks those it keeps. (No closure per call:
 * workers decode every call's arguments through here.) */
export function withUntrackedRefs<T>(decode: () => T): [T, ObjectRef<unknown>[]] {
  const outer = untracked;
  const made: ObjectRef<unknown>[] = (untracked = []);
  try {
    return [decode(), made];
  } finally {
    untracked = outer;
  }
}

/** Runs `encode` and returns, with its result, every ref it serialized (nested ones too): those must stay alive
 * until the receiver holds them. */
export function collectRefs<T>(encode: () => T): [T, ObjectRef<unknown>[]] {
  const outer = collecting;
  const refs: ObjectRef<unknown>[] = (collecting = []);
  try {
    return [encode(), refs];
  } finally {
    collecting = outer;
    outer?.push(...refs);
  }
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
  ) {
    if (untracked) untracked.push(this);
    else onCreate?.(this);
  }

  then<A = T, B = never>(
    onFulfilled?: ((v: T) => A | PromiseLike<A>) | null,
    onRejected?: ((e: any) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    if (!resolver)
      return Promise.reject(new UsageError('troupe is not initialized: call init() first')).then(
        onFulfilled,
        onRejected,
      );
    return (resolver(this) as Promise<T>).then(onFulfilled, onRejected);
  }

  // catch and finally as on a Promise. Not a Promise subclass: a Promise starts settling when it is made, and a ref
  // fetches nothing until it is awaited (most are only passed on to other calls); and a ref is sent as a reference,
  // where the codec refuses promises.
  catch<B = never>(onRejected?: ((e: any) => B | PromiseLike<B>) | null): Promise<T | B> {
    return this.then(undefined, onRejected);
  }

  finally(onFinally?: (() => void) | null): Promise<T> {
    return this.then().finally(onFinally);
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
    collecting?.push(r);
    return [r.id, r.owner];
  },
  read: ([id, owner]) => new ObjectRef(id, owner),
});
