// What a task or actor sees of the GPUs it was given: CUDA_VISIBLE_DEVICES names them, so CUDA shows it only those.
import { execFileSync } from 'node:child_process';
import { remote, chooseBackend, describeBackend } from 'troupe';

export interface GpuView {
  pid: number;
  /** What troupe set: the devices this lease holds ('' for none). */
  visible: string;
  /** What CUDA shows this process, asked through PyTorch where the machine has it. nvidia-smi cannot say: it lists
   * every device whatever CUDA_VISIBLE_DEVICES is. */
  cuda: string;
}

function cudaView(): string {
  const ask =
    'import torch; n = torch.cuda.device_count(); print(n, [torch.cuda.get_device_name(i) for i in range(n)])';
  try {
    return execFileSync('python3', ['-c', ask], { encoding: 'utf8', timeout: 120_000, stdio: 'pipe' }).trim();
  } catch {
    return 'not asked (no python3 with torch here)';
  }
}

const view = (): GpuView => ({ pid: process.pid, visible: process.env.CUDA_VISIBLE_DEVICES ?? '', cuda: cudaView() });

export const withGpu = remote({ numGpus: 1 }, view);
export const halfGpu = remote({ numGpus: 0.5, numCpus: 0 }, view);
export const withoutGpu = remote(view);

/** The tfjs backend a worker given a GPU computes on: tfjs-node-gpu when it loads, else the next that does. */
export const gpuBackend = remote({ numGpus: 1 }, async () => describeBackend(await chooseBackend()));
