// Actor checkpoints in a JetStream object store: they outlive the process, the node and the head, and JetStream
// chunks values larger than max_payload (model weights) for us.
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { encode, decode } from '../base/codec.ts';
import { openObjectStore, putIntoShared, SHARED_OBJECT_STORES } from './buckets.ts';

const BUCKET = SHARED_OBJECT_STORES.checkpoints;

export class CheckpointStore {
  private constructor(private readonly os: ObjectStore) {}

  static async open(bus: Bus): Promise<CheckpointStore> {
    return new CheckpointStore(await openObjectStore(bus, BUCKET));
  }

  /** Replaces the actor's checkpoint with `state` (anything troupe can encode, tensors included). A full store
   * (TROUPE_CHECKPOINT_STORE_BYTES) is a ClusterStoreFullError, and the checkpoint saved before stays. */
  async save(actorId: string, state: unknown): Promise<void> {
    const bytes = encode(state);
    await putIntoShared(this.os, 'checkpoints', () => this.os.putBlob({ name: actorId }, bytes));
  }

  /** The last checkpoint, or undefined when it has none. */
  async load<T = unknown>(actorId: string): Promise<{ state: T } | undefined> {
    const bytes = await this.os.getBlob(actorId);
    return bytes ? { state: decode<T>(bytes) } : undefined;
  }

  async delete(actorId: string): Promise<void> {
    await this.os.delete(actorId).catch(() => undefined); // none saved
  }
}
