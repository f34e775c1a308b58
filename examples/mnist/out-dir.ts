// Where `npm run demo` writes its chart and trained weights, and `npm run example:inference` reads the weights:
// examples/mnist/out, or MNIST_OUT (the tests use their own, so they never replace the weights of a real run).
import { join } from 'node:path';

export const OUT_DIR = process.env.MNIST_OUT || join(import.meta.dirname, 'out');
export const WEIGHTS = join(OUT_DIR, 'weights.bin');
