// A worker's checkpoints, kept by its node daemon: the worker asks over their IPC channel, and the node keeps in the
// cluster's store only the names this worker may use (node/worker-checkpoints.ts). The worker identity has no access
// to the store: a job's code could otherwise read, overwrite or purge every job's checkpoints.
import { encode, decode } from '../base/codec.ts';
import { ConnectionError } from '../base/errors.ts';
import type { Checkpoints } from '../state/checkpoints.ts';
import type { CheckpointAnswer, CheckpointAsk } from '../protocol/checkpoints.ts';

interface Waiting {
  resolve(bytes: Uint8Array | undefined): void;
  reject(e: Error): void;
}

export class NodeCheckpoints implements Checkpoints {
  private last = 0;
  private readonly waiting = new Map<number, Waiting>();

  constructor() {
    process.on('message', (m: Partial<CheckpointAnswer>) => {
      if (m?.type !== 'checkpoint' || typeof m.id !== 'number') return;
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.error) w.reject(decode<Error>(m.error));
      else w.resolve(m.bytes);
    });
  }

  async save(name: string, state: unknown): Promise<void> {
    await this.ask('save', name, encode(state));
  }

  async load<T = unknown>(name: string): Promise<{ state: T } | undefined> {
    const bytes = await this.ask('load', name);
    return bytes ? { state: decode<T>(bytes) } : undefined;
  }

  async delete(name: string): Promise<void> {
    await this.ask('delete', name);
  }

  private ask(op: CheckpointAsk['op'], name: string, bytes?: Uint8Array): Promise<Uint8Array | undefined> {
    const id = ++this.last;
    return new Promise((resolve, reject) => {
      const gone = (e: Error) => {
        this.waiting.delete(id);
        reject(new ConnectionError(`could not ask this worker's node for checkpoint '${name}': ${e.message}`));
      };
      if (!process.send) return gone(new Error('no channel to the node'));
      this.waiting.set(id, { resolve, reject });
      const ask: CheckpointAsk = { type: 'checkpoint', id, op, name, ...(bytes && { bytes }) };
      process.send(ask, (e: Error | null) => e && gone(e));
    });
  }
}
