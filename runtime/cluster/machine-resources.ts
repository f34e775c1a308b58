// What this machine offers: CPUs, GPUs (nvidia-smi -L unless told), memory, custom resources.
import { availableParallelism, totalmem } from 'node:os';
import { statfsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { UsageError } from '../base/errors.ts';
import type { ResourceSet } from '../scheduling/placement.ts';

export interface ResourceFlags {
  numCpus?: number;
  numGpus?: number;
  /** Bytes of memory to offer for `memory` demands. */
  memory?: number;
  /** Custom resources, e.g. { ssd: 1 }. */
  resources?: Record<string, number>;
}

/** GPU count from `nvidia-smi -L` (one line per device), 0 when it is absent or fails. */
export function detectGpus(): number {
  try {
    const out = execFileSync('nvidia-smi', ['-L'], {
      encoding: 'utf8',
      timeout: 5000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out.split('\n').filter((l) => /^GPU \d+:/.test(l)).length;
  } catch {
    return 0;
  }
}

export function detectResources(flags: ResourceFlags = {}): ResourceSet {
  const total: ResourceSet = {
    CPU: flags.numCpus ?? availableParallelism(),
    GPU: flags.numGpus ?? detectGpus(),
    // Like Ray: 30% of RAM goes to the object store, the rest is schedulable memory.
    memory: flags.memory ?? Math.floor(totalmem() * 0.7),
  };
  for (const [name, amount] of Object.entries(flags.resources ?? {})) total[name] = amount;
  return total;
}

/** Object store size, like Ray: 30% of RAM, but no more than the store's filesystem has free (/dev/shm is often
 * small). */
export function defaultObjectStoreMemory(root: string): number {
  let fsFree = Infinity;
  try {
    const s = statfsSync(root);
    fsFree = s.bavail * s.bsize;
  } catch {
    /* not made yet: RAM decides */
  }
  return Math.floor(Math.min(totalmem() * 0.3, fsFree * 0.9));
}

/** Parses `--resources '{"ssd": 1}'`. */
export function parseResourcesFlag(text: string): Record<string, number> {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new UsageError(`--resources must be a JSON object such as '{"ssd": 1}', got ${JSON.stringify(text)}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new UsageError(`--resources must be a JSON object such as '{"ssd": 1}'`);
  for (const [k, n] of Object.entries(v)) {
    if (k === 'CPU' || k === 'GPU' || k === 'memory')
      throw new UsageError(`--resources: use --num-cpus, --num-gpus or --memory for ${k}`);
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0)
      throw new UsageError(`--resources: ${k} must be a non-negative number`);
  }
  return v as Record<string, number>;
}
