// Objects this process owns (it put them, or submitted the task that makes them), and who waits for them.
import type { ObjectLocation } from '../runtime/protocol/objects.ts';
import type { ObjectRef } from './object-ref.ts';
import type { Borrowers } from './borrowers.ts';

export interface OwnedObject {
  id: string;
  /** What makes it: 'put' or 'task f'. Named in errors. */
  createdBy: string;
  createdAt: number;
  location?: ObjectLocation;
  /** Removable, so a wait() that times out leaves nothing behind. Made when the first waiter comes (most objects of a
   * busy driver are sealed before anyone waits: these are made thousands of times a second). */
  waiters?: Set<(loc: ObjectLocation) => void>;
  /** One shared promise for every whenSealed() caller. */
  sealed?: Promise<ObjectLocation>;
  /** Other processes holding refs to it; made when the first one says so. */
  borrowers?: Borrowers;
  /** Refs sent with the call that makes it: kept alive until the call is done and the receiver holds its own. */
  holds?: ObjectRef<unknown>[];
  /** Runs what made it again, when its only copies are lost (lineage). False when it cannot: then it stays lost. */
  rebuild?: (why: string) => boolean;
}

export class OwnerTable {
  private readonly objects = new Map<string, OwnedObject>();

  create(id: string, createdBy: string, holds?: ObjectRef<unknown>[]): void {
    this.objects.set(id, { id, createdBy, createdAt: Date.now(), holds: holds?.length ? holds : undefined });
  }

  /** Seal: the value (or its failure) is known. Wakes every waiter. */
  seal(id: string, location: ObjectLocation): void {
    const o = this.objects.get(id);
    if (!o || o.location) return;
    o.location = location;
    o.holds = undefined;
    const waiters = o.waiters;
    o.waiters = undefined;
    if (waiters) for (const w of waiters) w(location);
  }

  /** Back to pending: what made it runs again, and waiters get the new location. */
  unseal(id: string): void {
    const o = this.objects.get(id);
    if (!o) return;
    o.location = undefined;
    o.sealed = undefined;
  }

  get(id: string): OwnedObject | undefined {
    return this.objects.get(id);
  }

  /** Location once sealed; undefined for an id this process does not own. */
  whenSealed(id: string): Promise<ObjectLocation> | undefined {
    const o = this.objects.get(id);
    if (!o) return undefined;
    if (o.location) return Promise.resolve(o.location);
    return (o.sealed ??= new Promise((r) => (o.waiters ??= new Set()).add(r)));
  }

  /** Calls back once sealed (at once if it is). Returns a remover, or undefined for an id we do not own. */
  onSealed(id: string, cb: (loc: ObjectLocation) => void): (() => void) | undefined {
    const o = this.objects.get(id);
    if (!o) return undefined;
    if (o.location) {
      cb(o.location);
      return () => undefined;
    }
    const waiters = (o.waiters ??= new Set());
    waiters.add(cb);
    return () => waiters.delete(cb);
  }

  /** Fails everything still pending for which pred holds (the worker or node making it died). */
  failPending(pred: (o: OwnedObject) => boolean, error: Error): void {
    for (const o of this.objects.values()) if (!o.location && pred(o)) this.seal(o.id, { error });
  }

  values(): IterableIterator<OwnedObject> {
    return this.objects.values();
  }

  delete(id: string): void {
    this.objects.delete(id);
  }
}
