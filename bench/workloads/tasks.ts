// Remote functions for the benchmarks. Workers import this module by URL.
import { remote } from 'troupe';

/** Ray's small_value: a task that returns a small value. */
export const smallValue = remote(() => 0);
