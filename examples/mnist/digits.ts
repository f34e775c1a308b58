// The 10,000 real MNIST digits of the `mnist` package, in a fixed shuffled order: the first 8,000 are the training
// set and the last 2,000 the test set, for every example that uses them.
import { createRequire } from 'node:module';

export const TRAIN = 8000;
export const PIXELS = 784;

interface Digit {
  length: number;
  get(i: number): number[];
}

/** Every digit as 784 values in [0, 1] with its label, in a fixed shuffled order. */
export function loadDigits(): { x: Float32Array; labels: Uint8Array; count: number } {
  const mnist = createRequire(import.meta.url)('mnist') as Record<number, Digit>;
  const all: Array<[number, number]> = [];
  for (let d = 0; d < 10; d++) for (let i = 0; i < mnist[d].length; i++) all.push([d, i]);
  let s = 42;
  for (let i = all.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [all[i], all[j]] = [all[j], all[i]];
  }
  const x = new Float32Array(all.length * PIXELS);
  const labels = new Uint8Array(all.length);
  all.forEach(([d, i], n) => {
    x.set(mnist[d].get(i), n * PIXELS);
    labels[n] = d;
  });
  return { x, labels, count: all.length };
}

/** The test digits: images one by one, and their labels. */
export function testDigits(): { images: Float32Array[]; labels: Uint8Array } {
  const { x, labels, count } = loadDigits();
  const images = Array.from({ length: count - TRAIN }, (_, i) =>
    x.slice((TRAIN + i) * PIXELS, (TRAIN + i + 1) * PIXELS),
  );
  return { images, labels: labels.slice(TRAIN) };
}
