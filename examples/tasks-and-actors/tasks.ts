// Remote functions live in their own module: workers import it by URL.
import { remote, get, type ObjectRef } from 'troupe';

/** A CPU task. */
export const square = remote({ numCpus: 1 }, (x: number) => x * x);

/** Takes a list of refs (nested refs stay refs) and sums their values on the worker. */
export const sumAll = remote(async (refs: ObjectRef<number>[]) => {
  const values = await get(refs);
  return values.reduce((a, b) => a + b, 0);
});

/** Normalizes a vector: a typed array in, a typed array out. */
export const normalize = remote((v: Float32Array) => {
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
});

/** Fails, to show how remote errors look. */
export const explode = remote((why: string) => {
  throw new RangeError(`exploded: ${why}`);
});

/** Reports where it ran and which GPUs it was given. */
export const whereAmI = remote({ numCpus: 0.5 }, () => ({
  pid: process.pid,
  gpus: process.env.CUDA_VISIBLE_DEVICES ?? '',
}));
