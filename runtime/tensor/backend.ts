// Which tfjs backend a process computes on, best first: TensorFlow native with a GPU, TensorFlow native on CPU, wasm,
// pure JS. The native packages are optional (their installers download libtensorflow, which fails where that network
// is closed), so each is tried and skipped with the reason when it does not load. Nothing here loads tfjs until a
// backend is chosen: processes that never use it never pay for it.

export interface BackendCandidate {
  /** tfjs's name for the backend it registers. */
  backend: 'tensorflow' | 'wasm' | 'cpu';
  /** The npm package that provides it. */
  pkg: string;
  /** Only for processes that were given a GPU. */
  needsGpu?: boolean;
}

export const BACKENDS: readonly BackendCandidate[] = [
  { backend: 'tensorflow', pkg: '@tensorflow/tfjs-node-gpu', needsGpu: true },
  { backend: 'tensorflow', pkg: '@tensorflow/tfjs-node' },
  { backend: 'wasm', pkg: '@tensorflow/tfjs-backend-wasm' },
  { backend: 'cpu', pkg: '@tensorflow/tfjs-backend-cpu' },
];

export interface BackendChoice {
  backend: string;
  pkg: string;
  /** The better ones that did not load, and why. */
  skipped: Array<{ pkg: string; why: string }>;
}

let chosen: Promise<BackendChoice> | undefined;

/** The backend this process chose, once it has. */
export function currentBackend(): Promise<BackendChoice> | undefined {
  return chosen;
}

/** Whether this process has loaded tfjs (any module imported it): only then is a backend worth choosing. */
export function tfjsLoaded(): boolean {
  return '_tfengine' in globalThis;
}

/** A GPU was given to this process (its node daemon sets CUDA_VISIBLE_DEVICES to the ids it leased). */
export function hasGpu(env: NodeJS.ProcessEnv = process.env): boolean {
  return !!env.CUDA_VISIBLE_DEVICES && env.CUDA_VISIBLE_DEVICES !== '-1';
}

/** TensorFlow starts pools of one thread per core in every process, so two workers on two cores would each run two
 * threads and fight. A worker computes with as many threads as the CPUs of the lease it was bound with (at least one),
 * as Ray sets OMP_NUM_THREADS; eager ops run one at a time per call, so one inter-op thread is enough. A number the
 * job's environment (or the node's) sets already wins. Read once, when TensorFlow loads: set before that. */
export function tensorflowThreads(cpus: number, env: NodeJS.ProcessEnv = process.env): void {
  env.TF_NUM_INTRAOP_THREADS ??= String(Math.max(1, Math.floor(cpus)));
  env.TF_NUM_INTEROP_THREADS ??= '1';
}

/** Chooses and activates the first candidate that loads; once per process (later calls get the same answer).
 * TROUPE_TENSOR_BACKEND=wasm (or a package name) starts the search at that candidate. */
export function chooseBackend(
  o: { gpu?: boolean; candidates?: readonly BackendCandidate[]; startAt?: string } = {},
): Promise<BackendChoice> {
  return (chosen ??= pick(o));
}

/** The search itself, not remembered: chooseBackend is what processes use. */
export async function pick(o: {
  gpu?: boolean;
  candidates?: readonly BackendCandidate[];
  startAt?: string;
}): Promise<BackendChoice> {
  const tf = await import('@tensorflow/tfjs-core');
  const gpu = o.gpu ?? hasGpu();
  let list = o.candidates ?? BACKENDS;
  const startAt = o.startAt ?? process.env.TROUPE_TENSOR_BACKEND;
  if (startAt) {
    const i = list.findIndex((c) => c.backend === startAt || c.pkg === startAt);
    if (i < 0)
      throw new Error(
        `TROUPE_TENSOR_BACKEND=${startAt} names no backend: use one of ` +
          `${[...new Set(list.map((c) => c.backend))].join(', ')}`,
      );
    list = list.slice(i);
  }
  const skipped: BackendChoice['skipped'] = [];
  for (const c of list) {
    if (c.needsGpu && !gpu) {
      skipped.push({ pkg: c.pkg, why: 'no GPU given to this process' });
      continue;
    }
    try {
      await import(c.pkg);
      if (c.backend === 'wasm') (await import('./wasm-kernels.ts')).registerWasmConvGradient();
      if (!(await tf.setBackend(c.backend))) throw new Error(`backend ${c.backend} failed to initialize`);
      await tf.ready();
      return { backend: tf.getBackend(), pkg: c.pkg, skipped };
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      skipped.push({
        pkg: c.pkg,
        why: err.code === 'ERR_MODULE_NOT_FOUND' ? 'not installed' : err.message.split('\n')[0],
      });
    }
  }
  throw new Error(`no tfjs backend could be loaded: ${skipped.map((s) => `${s.pkg} (${s.why})`).join('; ')}`);
}

/** One line for logs and `troupe list actors`. */
export function describeBackend(c: BackendChoice): string {
  const better = c.skipped.filter((s) => s.why !== 'no GPU given to this process');
  return better.length ? `${c.backend} (${better.map((s) => `${s.pkg}: ${s.why}`).join('; ')})` : c.backend;
}
