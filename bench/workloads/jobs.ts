// Workers are bound to jobs: what that costs a new job's first call, against reusing a worker that has the job's
// module loaded already (which reusing an earlier job's worker with unchanged code would give).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const driver = fileURLToPath(new URL('./job-driver.ts', import.meta.url));
const root = fileURLToPath(new URL('../..', import.meta.url));

/** Runs `jobs` drivers one after another on the current cluster; milliseconds of each one's two first calls. */
export async function firstCalls(jobs: number): Promise<{ spare: number[]; reused: number[] }> {
  const out = { spare: [] as number[], reused: [] as number[] };
  for (let i = 0; i < jobs; i++) {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', driver], {
      cwd: root,
      timeout: 60_000,
    });
    const line = stdout.split('\n').find((l) => l.startsWith('FIRST_CALLS '));
    if (!line) throw new Error(`the job driver printed no figures: ${stdout}`);
    const ms = JSON.parse(line.slice('FIRST_CALLS '.length)) as { spare: number; reused: number };
    out.spare.push(ms.spare);
    out.reused.push(ms.reused);
  }
  return out;
}
