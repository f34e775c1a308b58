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

/** The GPUs this machine offers, named as CUDA names them, in the order troupe hands them out. As in Ray, a daemon
 * started with CUDA_VISIBLE_DEVICES offers only those devices (indices or `GPU-…` UUIDs; empty or `-1`: none), else
 * every device nvidia-smi lists. `numGpus` (--num-gpus) offers that many: the first of the visible ones, or, with
 * none visible, ids 0…n-1 without asking nvidia-smi (tests declare fake GPUs so). */
export function gpuDevices(numGpus?: number, env: NodeJS.ProcessEnv = process.env): string[] {
  const visible = env.CUDA_VISIBLE_DEVICES;
  if (visible === undefined) return Array.from({ length: Math.floor(numGpus ?? detectGpus()) }, (_, i) => String(i));
  const ids = visible.split(',').map((id) => id.trim());
  // CUDA stops at the first id that names no device; -1 is the usual way to hide them all.
  const end = ids.findIndex((id) => id === '' || id === '-1');
  const devices = end < 0 ? ids : ids.slice(0, end);
  if (numGpus === undefined) return devices;
  if (numGpus > devices.length)
    throw new UsageError(
      `asked to offer ${numGpus} GPU(s) (--num-gpus, numGpus), but CUDA_VISIBLE_DEVICES=${JSON.stringify(visible)} ` +
        `leaves this machine ${devices.length}: unset it or list the GPUs to offer`,
    );
  return devices.slice(0, Math.floor(numGpus));
}

/** What the node offers; `gpus` from gpuDevices(). */
export function detectResources(flags: ResourceFlags, gpus: string[]): ResourceSet {
  const total: ResourceSet = {
    CPU: flags.numCpus ?? availableParallelism(),
    // A fraction given with --num-gpus stays as given: placement counts it, devices are whole.
    GPU: flags.numGpus ?? gpus.length,
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
