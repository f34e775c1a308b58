// Counts this process's live ObjectRef instances per object, as Ray's local reference counts do. Owners learn from
// it when their own refs are gone; borrowers use it to tell an owner when they start and stop holding its object.
import type { ObjectRef } from './object-ref.ts';

export interface RefCounterEvents {
  /** First ref in this process to another process's object. */
  borrowed(id: string, owner: string): void;
  /** Last ref in this process to another process's object is gone. */
  returned(id: string, owner: string): void;
  /** Last ref in this process to one of our own objects is gone. */
  unreferenced(id: string): void;
}

export class RefCounter {
  private readonly counts = new Map<string, number>();
  private readonly registry = new FinalizationRegistry<string>((key) => this.release(key));

  constructor(
    private readonly procId: string,
    private readonly events: RefCounterEvents,
  ) {}

  track(ref: ObjectRef<unknown>): void {
    const n = this.counts.get(ref.id) ?? 0;
    this.counts.set(ref.id, n + 1);
    // Held: the id alone for our own objects (most refs of a busy driver), else "id owner".
    this.registry.register(ref, ref.owner === this.procId ? ref.id : `${ref.id} ${ref.owner}`);
    if (n === 0 && ref.owner !== this.procId) this.events.borrowed(ref.id, ref.owner);
  }

  count(id: string): number {
    return this.counts.get(id) ?? 0;
  }

  /** Objects this process holds refs to. */
  get size(): number {
    return this.counts.size;
  }

  private release(key: string): void {
    const space = key.indexOf(' ');
    const id = space < 0 ? key : key.slice(0, space);
    const owner = space < 0 ? this.procId : key.slice(space + 1);
    const n = (this.counts.get(id) ?? 1) - 1;
    if (n > 0) {
      this.counts.set(id, n);
      return;
    }
    this.counts.delete(id);
    if (owner === this.procId) this.events.unreferenced(id);
    else this.events.returned(id, owner);
  }
}
