// Actor checkpoints in a JetStream object store: they outlive the process, the node and the head, and JetStream
// chunks values larger than max_payload (model weights) for us.
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { encode, decode } from '../base/codec.ts';
import { openObjectStore, putIntoShared, SHARED_OBJECT_STORES } from './buckets.ts';

const BUCKET = SHARED_OBJECT_STORES.checkpoints;

/** Saved states by name: an actor's id, or a job's own name (protocol/checkpoints.ts). The store itself for the head
 * and nodes; for a worker, its node (worker/node-checkpoints.ts); for a driver, removing its job's through the head
 * (core/driver-checkpoints.ts). */
export interface Checkpoints {
  /** Replaces the checkpoint with `state` (anything troupe can encode, tensors included). A full store
   * (TROUPE_CHECKPOINT_STORE_BYTES) is a ClusterStoreFullError, and the checkpoint saved before stays. */
  save(name: string, state: unknown): Promise<void>;
  /** The last checkpoint, or undefined when there is none. */
  load<T = unknown>(name: string): Promise<{ state: T } | undefined>;
  /** Removes it; none saved is no error. */
  delete(name: string): Promise<void>;
}

export class CheckpointStore implements Checkpoints {
  private constructor(private readonly os: ObjectStore) {}

  static async open(bus: Bus): Promise<CheckpointStore> {
    return new CheckpointStore(await openObjectStore(bus, BUCKET));
  }

  save(name: string, state: unknown): Promise<void> {
    return this.saveEncoded(name, encode(state));
  }

  async load<T = unknown>(name: string): Promise<{ state: T } | undefined> {
    const bytes = await this.loadEncoded(name);
    return bytes ? { state: decode<T>(bytes) } : undefined;
  }

  /** A state encoded already (a worker's, through its node). */
  async saveEncoded(name: string, bytes: Uint8Array): Promise<void> {
    await putIntoShared(this.os, 'checkpoints', () => this.os.putBlob({ name }, bytes));
  }

  async loadEncoded(name: string): Promise<Uint8Array | undefined> {
    return (await this.os.getBlob(name)) ?? undefined;
  }

  async delete(name: string): Promise<void> {
    await this.os.delete(name).catch(() => undefined); // none saved
  }
}
