// Actor checkpoints in a JetStream object store: they outlive the process, the node and the head, and JetStream
// chunks values larger than max_payload (model weights) for us.
import type { ObjectStore } from '@nats-io/obj';
import type { Bus } from '../bus/bus.ts';
import { encode, decode } from '../base/codec.ts';
import { openObjectStore, putIntoShared, SHARED_OBJECT_STORES } from './buckets.ts';
import { defaults } from '../base/config.ts';
import { ClusterStoreFullError } from '../base/errors.ts';
import { formatBytes } from '../base/bytes.ts';

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
  private constructor(
    private readonly os: ObjectStore,
    private readonly jobBytes: number | undefined,
  ) {}

  /** `jobBytes`: the most one job's checkpoints may hold (defaults.checkpointJobBytes; undefined: half the store's
   * bound, 0: no share), checked on saves that name their job (saveEncoded). */
  static async open(bus: Bus, jobBytes = defaults.checkpointJobBytes): Promise<CheckpointStore> {
    return new CheckpointStore(await openObjectStore(bus, BUCKET), jobBytes);
  }

  save(name: string, state: unknown): Promise<void> {
    return this.saveEncoded(name, encode(state));
  }

  async load<T = unknown>(name: string): Promise<{ state: T } | undefined> {
    const bytes = await this.loadEncoded(name);
    return bytes ? { state: decode<T>(bytes) } : undefined;
  }

  /** A state encoded already (a worker's, through its node). With `job`, it is kept as that job's, and refused with a
   * ClusterStoreFullError when the job's checkpoints would hold more than their share. */
  async saveEncoded(name: string, bytes: Uint8Array, job?: string): Promise<void> {
    if (job !== undefined) await this.roomForJob(job, name, bytes.length);
    const meta = { name, ...(job !== undefined && { metadata: { job } }) };
    await putIntoShared(this.os, 'checkpoints', () => this.os.putBlob(meta, bytes));
  }

  /** Checked against what the store lists before each save: saves of one job on several nodes at the same moment may
   * pass it together, by one checkpoint each. The checkpoint a save replaces does not count. */
  private async roomForJob(job: string, name: string, size: number): Promise<void> {
    const share = this.jobBytes ?? (await this.halfTheBound());
    if (share <= 0) return;
    let held = 0;
    for (const i of await this.os.list()) if (!i.deleted && i.name !== name && i.metadata?.job === job) held += i.size;
    if (held + size <= share) return;
    throw new ClusterStoreFullError(
      `job ${job}'s checkpoints hold ${formatBytes(held)} of the ${formatBytes(share)} one job may keep in the ` +
        `cluster's checkpoint store (${BUCKET}), and this one is ${formatBytes(size)}: it was not saved, and nothing ` +
        "saved before was dropped. An actor's checkpoint is deleted when the actor ends, a training run's when the " +
        "run does; TROUPE_CHECKPOINT_JOB_BYTES on the node daemons sets one job's share (default: half the store's " +
        'bound, TROUPE_CHECKPOINT_STORE_BYTES)',
    );
  }

  private async halfTheBound(): Promise<number> {
    const max = (await this.os.status()).streamInfo.config.max_bytes;
    return max > 0 ? Math.floor(max / 2) : 0;
  }

  async loadEncoded(name: string): Promise<Uint8Array | undefined> {
    return (await this.os.getBlob(name)) ?? undefined;
  }

  async delete(name: string): Promise<void> {
    await this.os.delete(name).catch(() => undefined); // none saved
  }
}
