// GPUs on a local cluster: how many the node offers (nvidia-smi -L, or the node's CUDA_VISIBLE_DEVICES), what each
// task is given, and what CUDA then shows it. On a machine without GPUs it says so and stops.
import { init, shutdown, get, InfeasibleError } from 'troupe';
import { withGpu, halfGpu, withoutGpu, gpuBackend, type GpuView } from './tasks.ts';

await init();
try {
  const show = (what: string, v: GpuView) =>
    console.log(`${what}: pid ${v.pid}, CUDA_VISIBLE_DEVICES=${JSON.stringify(v.visible)}; CUDA sees ${v.cuda}`);
  show('a task without GPUs', await withoutGpu.remote());
  let one: GpuView | undefined;
  try {
    one = await withGpu.remote();
  } catch (e) {
    if (!(e instanceof InfeasibleError)) throw e;
  }
  if (!one) console.log('this machine offers no GPU (none in nvidia-smi -L or CUDA_VISIBLE_DEVICES): nothing to show');
  else {
    show('a task with numGpus: 1', one);
    const [a, b] = await get([halfGpu.remote(), halfGpu.remote()]);
    show('a task with numGpus: 0.5', a);
    show('another with numGpus: 0.5', b);
    console.log(`tfjs backend of a worker given a GPU: ${await gpuBackend.remote()}`);
  }
} finally {
  await shutdown();
}
