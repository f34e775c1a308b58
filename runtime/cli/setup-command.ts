// `troupe setup tensorflow [--gpu]`: builds and installs tfjs's native backend (native-tensorflow.ts), then says
// what it did and how fast the backend is. When a step cannot be done it says which and why, and exits 1: troupe
// goes on with the wasm backend.
import { parseArgs } from 'node:util';
import { TensorflowSetupError, UsageError } from '../base/errors.ts';
import { setupNativeTensorflow, TENSORFLOW_VERSION, type SetupReport } from './native-tensorflow.ts';

export const SETUP_HELP = `troupe setup tensorflow [--gpu] [--tensorflow-version V]

Builds tfjs's native TensorFlow backend from the package registries, where @tensorflow/tfjs-node's own installer
cannot download libtensorflow: pip fetches the TensorFlow wheel (tensorflow-cpu, or tensorflow with --gpu; default
${TENSORFLOW_VERSION}), its C library and headers are kept, and npm's node-gyp compiles the binding of
@tensorflow/tfjs-node (-gpu) against them. Needs python3 with pip, a C++ compiler and make. Everything is cached under
TROUPE_CACHE_DIR (default ~/.cache/troupe), so running it again, or after 'npm ci', is quick. Workers then compute on
the tensorflow backend; without it they use wasm.`;

export async function setupCommand(argv: string[]): Promise<number> {
  const [what, ...rest] = argv;
  if (!what || what === '--help' || what === '-h') {
    console.log(SETUP_HELP);
    return 0;
  }
  if (what !== 'tensorflow')
    throw new UsageError(`troupe setup: unknown component '${what}'; try: troupe setup tensorflow`);
  let values: { gpu?: boolean; 'tensorflow-version'?: string };
  try {
    ({ values } = parseArgs({
      args: rest,
      options: { gpu: { type: 'boolean' }, 'tensorflow-version': { type: 'string' } },
      strict: true,
    }));
  } catch (e) {
    throw new UsageError(`troupe setup tensorflow: ${(e as Error).message}`);
  }
  const version = values['tensorflow-version'];
  if (version !== undefined && !/^\d+\.\d+\.\d+$/.test(version))
    throw new UsageError(
      `--tensorflow-version takes a release like ${TENSORFLOW_VERSION}, got ${JSON.stringify(version)}`,
    );
  let report: SetupReport;
  try {
    report = await setupNativeTensorflow({
      gpu: values.gpu,
      tensorflowVersion: version,
      log: (line) => console.log(`setup: ${line}`),
    });
  } catch (e) {
    if (!(e instanceof TensorflowSetupError)) throw e;
    console.error(`troupe setup tensorflow: step '${e.step}' failed: ${e.message}`);
    console.error('troupe keeps working on the wasm backend.');
    return 1;
  }
  const { speed } = report;
  const wasm = speed.wasm ? `; wasm here: ${speed.wasm.toFixed(1)}` : '';
  console.log(
    `${report.already ? 'already set up' : 'set up'}: ${report.pkg} ${report.tfjsVersion} on TensorFlow ` +
      `${report.tensorflowVersion}. 1024² matMul: ${speed.oneThread.toFixed(1)} GFLOP/s on 1 thread, ` +
      `${speed.allThreads.toFixed(1)} on all cores${wasm}`,
  );
  return 0;
}
