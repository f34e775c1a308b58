// What an actor instance and the process hosting it share: the marks of a remote class, the hooks the runtime calls,
// the id of the actor being constructed, and how an instance saves its checkpoint. The worker's actor host sets
// these; the actor API (the Actor base class, @remote, handles) reads them, without importing the worker.
import { UsageError } from '../base/errors.ts';

/** Methods the runtime calls on an instance, never a remote caller. */
export const LIFECYCLE = ['onStart', 'onStop', 'checkpoint', 'restore'] as const;

/** Marks a class made remote by the actors layer (a well-known symbol: this layer cannot import that one). */
export const REMOTE_CLASS = Symbol.for('troupe.remoteClass');

// The actor whose constructor is running: the Actor base class learns its id from here.
let constructing: string | undefined;
export function constructingActorId(): string | undefined {
  return constructing;
}

/** Constructs an instance of an actor class, which learns its id in its constructor. */
export function constructActor<T>(actorId: string, make: () => T): T {
  constructing = actorId;
  try {
    return make();
  } finally {
    constructing = undefined;
  }
}

const savers = new WeakMap<object, () => Promise<void>>();
/** How a hosted instance saves its checkpoint now. */
export function setCheckpointSaver(instance: object, save: () => Promise<void>): void {
  savers.set(instance, save);
}

/** Saves an instance's checkpoint now (Actor.saveCheckpoint). */
export function saveCheckpointOf(instance: object): Promise<void> {
  const save = savers.get(instance);
  if (!save)
    return Promise.reject(new UsageError('saveCheckpoint(): this object is not an actor instance hosted by troupe'));
  return save();
}
