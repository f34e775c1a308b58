// The inference row: the pool and load of npm run example:inference (examples/inference/drive.ts), unbatched and
// then batched, on the bench's cluster.
import { batched, drive, unbatched, type Run } from '../../examples/inference/drive.ts';
import { testDigits } from '../../examples/mnist/digits.ts';

export interface Batching {
  unbatched: Run;
  batched: Run;
  seconds: number;
  concurrency: number;
}

/** The same load on a pool of one replica (1 CPU), with maxBatchSize 1 and then 32. */
export async function inferenceBatching(o: { seconds: number; concurrency: number }): Promise<Batching> {
  const load = { ...o, ...testDigits() };
  return {
    ...o,
    unbatched: await drive(unbatched(o.concurrency), load),
    batched: await drive(batched(o.concurrency), load),
  };
}
