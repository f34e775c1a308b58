// A seeded source of uniform numbers, for what must come out the same for the same seed (Math.random cannot be seeded).

/** Uniform in [0, 1) from a 32-bit seed: a Weyl sequence through a murmur3-style mixer (small, and good enough to
 * spread configs and initial weights). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = Math.imul(s ^ (s >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32;
  };
}

/** Runs `fn` with Math.random drawing from `seed`: libraries that draw from it without a seed of their own (tfjs
 * layer initializers) then give the same values each time. Only for processes that run nothing else meanwhile. */
export async function withSeededMathRandom<T>(seed: number, fn: () => T | Promise<T>): Promise<T> {
  const original = Math.random;
  Math.random = seededRandom(seed);
  try {
    return await fn();
  } finally {
    Math.random = original;
  }
}
