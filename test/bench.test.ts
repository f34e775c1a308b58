// The benchmarks run with tiny counts, so they cannot rot. Speed is never asserted here: see npm run bench.
import test from 'ava';
import { join } from 'node:path';
import { runCommand, tempDir } from './helpers/cluster.ts';

test('npm run bench works end to end (smoke: tiny counts, nothing written)', async (t) => {
  const r = await runCommand(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--smoke'], { cwd: join(import.meta.dirname, '..'), env: { TROUPE_HOME: tempDir(t), TROUPE_ADDRESS: '', TROUPE_TOKEN: '' }, timeoutMs: 90_000 });
  t.is(r.code, 0, r.stderr);
  for (const metric of ['shared_actors_20_create_and_call', '1_1_actor_calls_sync', '1_1_actor_calls_async']) t.regex(r.stdout, new RegExp(`\\| ${metric} \\| [\\d.]+ `));
});
