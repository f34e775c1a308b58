// Actors by name, and ending them.
import { currentCore } from '../runtime/core/core.ts';
import { makeHandle, HandleData, type ActorHandle } from './handle.ts';

/** A handle to the live actor registered under `name` (in `namespace`, default 'default'), from any driver. */
export async function getActor<T = Record<string, (...args: any[]) => any>>(
  name: string,
  opts: { namespace?: string } = {},
): Promise<ActorHandle<T>> {
  const found = await currentCore().lookupActor(name, opts.namespace);
  return makeHandle<T>(new HandleData(found.actorId, found.className, found.maxTaskRetries, found.maxPendingCalls));
}

/** Ends an actor. noRestart (default true): DEAD for good; false: it counts as a crash and restarts if it has restarts
 * left.
 * A supervised child is its supervisor's to judge: a permanent one comes back, transient and temporary ones stay
 * stopped. */
export async function kill(handle: ActorHandle<unknown>, opts: { noRestart?: boolean } = {}): Promise<void> {
  await currentCore().killActor(handle.actorId, opts.noRestart ?? true);
}
