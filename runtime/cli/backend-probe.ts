// Loading a tfjs backend in a process of its own, in the project, and timing it: whether a build worked, and how fast
// it is beside wasm.
import { runToolAsync } from './run-tool.ts';

export interface Speed {
  /** 1024×1024 float32 matMul, GFLOP/s. */
  oneThread: number;
  allThreads: number;
  /** The same on the wasm backend in this run, for comparison. */
  wasm?: number;
}

/** A child process in the project loads `pkg` and, asked to, times a 1024² matMul (GFLOP/s). */
const PROBE_JS = `
const [pkg, reps] = process.argv.slice(1);
const out = (o) => { process.stdout.write(JSON.stringify(o)); process.exit(0); };
(async () => {
  const tf = await import('@tensorflow/tfjs-core');
  try { await import(pkg); } catch (e) { return out({ backend: 'none', error: String(e.message).split('\\n')[0] }); }
  if (pkg.endsWith('wasm')) await tf.setBackend('wasm');
  await tf.ready();
  let gflops;
  if (Number(reps) > 0) {
    const a = tf.randomNormal([1024, 1024]), b = tf.randomNormal([1024, 1024]);
    tf.matMul(a, b).dataSync();
    const t0 = performance.now();
    for (let i = 0; i < Number(reps); i++) tf.matMul(a, b).dataSync();
    gflops = (Number(reps) * 2 * 1024 ** 3) / ((performance.now() - t0) / 1000) / 1e9;
  }
  out({ backend: tf.getBackend(), gflops });
})();
`;

interface Probe {
  backend: string;
  error?: string;
  gflops?: number;
}

export async function probeBackend(projectDir: string, pkg: string, reps: number, threads?: number): Promise<Probe> {
  const env = { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' };
  if (threads) Object.assign(env, { TF_NUM_INTRAOP_THREADS: String(threads), TF_NUM_INTEROP_THREADS: '1' });
  const r = await runToolAsync(process.execPath, ['--input-type=commonjs', '-e', PROBE_JS, pkg, String(reps)], {
    cwd: projectDir,
    env,
  });
  const last = r.output.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last.slice(last.indexOf('{'))) as Probe;
  } catch {
    return { backend: 'none', error: r.output.trim().split('\n').slice(-3).join(' ') };
  }
}

export async function speeds(projectDir: string, pkg: string): Promise<Speed> {
  const one = await probeBackend(projectDir, pkg, 10, 1);
  const all = await probeBackend(projectDir, pkg, 20);
  const wasm = await probeBackend(projectDir, '@tensorflow/tfjs-backend-wasm', 5);
  return { oneThread: one.gflops ?? 0, allThreads: all.gflops ?? 0, wasm: wasm.gflops };
}
