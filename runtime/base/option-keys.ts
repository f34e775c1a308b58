// The keys an options object may have, written once and checked by the compiler against its interface: a key the
// interface lacks, or one left out, is a type error, so a hand-kept list cannot drift from the type.

/** `keysOf<TaskOptions>({ numCpus: true, … })`: the set of the interface's keys, every one named. */
export function keysOf<T>(all: { [K in keyof Required<T>]: true }): ReadonlySet<string> {
  return new Set(Object.keys(all));
}
