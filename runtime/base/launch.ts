// How troupe starts its own Node processes: `node --import tsx <entry>`, with tsx resolved from this package
// so the job's working directory need not have it.
import { fileURLToPath } from 'node:url';

const tsxLoader = import.meta.resolve('tsx');

function nodeWithTsx(entry: URL, args: string[] = [], flags: string[] = []): [string, string[]] {
  // TROUPE_CPU_PROF_DIR=dir: every daemon and worker writes a V8 CPU profile there when it exits.
  const prof = process.env.TROUPE_CPU_PROF_DIR
    ? ['--cpu-prof', `--cpu-prof-dir=${process.env.TROUPE_CPU_PROF_DIR}`]
    : [];
  return [process.execPath, [...prof, ...flags, '--import', tsxLoader, fileURLToPath(entry), ...args]];
}

// --expose-gc: an idle worker collects, so refs it dropped reach their owners (see worker/worker.ts).
export const workerCommand = () => nodeWithTsx(new URL('../worker/worker.ts', import.meta.url), [], ['--expose-gc']);
export const daemonCommand = (role: 'head' | 'node') =>
  nodeWithTsx(new URL('../cluster/daemon.ts', import.meta.url), [role]);
