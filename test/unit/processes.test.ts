import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { isAlive, sleep } from '../../runtime/base/processes.ts';

// A zombie: the shell's background child exits, and its parent (the shell, replaced by `sleep` through exec) never
// reaps it. kill(pid, 0) still finds it, as it finds an exited daemon until a container's init reaps it.
test('a process that exited but was not reaped is not alive', async (t) => {
  const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => parent.kill('SIGKILL'));
  const [line] = (await once(parent.stdout, 'data')) as [Buffer];
  const pid = Number(line.toString().trim());
  t.true(isAlive(pid), 'running');
  await sleep(300);
  t.notThrows(() => process.kill(pid, 0), 'still found by kill(pid, 0): a zombie');
  t.false(isAlive(pid), 'not alive: `troupe stop` and terminate() wait for no signal it cannot answer');
  t.true(isAlive(parent.pid!), 'its parent runs');
});
