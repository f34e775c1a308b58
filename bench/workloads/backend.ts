// Which tfjs backend a cluster's workers compute on, asked of one of them: it chooses as a training replica or an
// inference replica would (the best that loads, from TROUPE_TENSOR_BACKEND in its daemon's environment on).
import { remote, chooseBackend, describeBackend } from 'troupe';

export interface WorkerBackend {
  /** tfjs's name: 'tensorflow', 'wasm', 'cpu'. */
  backend: string;
  /** The backend and why the better ones did not load, e.g. "wasm (@tensorflow/tfjs-node: not installed)". */
  described: string;
}

export const workerBackend = remote(async (): Promise<WorkerBackend> => {
  const choice = await chooseBackend();
  return { backend: choice.backend, described: describeBackend(choice) };
});
