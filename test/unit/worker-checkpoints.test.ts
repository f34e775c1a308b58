import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { serveWorkerCheckpoints } from '../../runtime/node/worker-checkpoints.ts';
import type { CheckpointStore } from '../../runtime/state/checkpoints.ts';

const asker = join(import.meta.dirname, '..', 'fixtures', 'checkpoint-asker.ts');

// A real process asks over a real IPC channel, as a worker asks its node. The store is one that only records: what
// the node may not do never reaches it (attacks-roles.test.ts goes through the real one).
test(
  "a worker's checkpoint asks: its hosted actors' and its job's reach the store; others and malformed ones are " +
    'refused',
  async (t) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--conditions=troupe-source', asker], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    t.teardown(() => child.kill('SIGKILL'));
    const reached: string[] = [];
    const store = {
      saveEncoded: async (name: string, bytes: Uint8Array, job?: string) =>
        void reached.push(`save ${name} ${bytes.length > 0} as ${job}`),
      loadEncoded: async (name: string) => void reached.push(`load ${name}`),
      delete: async (name: string) => void reached.push(`delete ${name}`),
    } as unknown as CheckpointStore;
    serveWorkerCheckpoints(
      child,
      { hosts: (id) => id === '0123456789abcdef0', jobId: () => 'mine' },
      async () => store,
    );
    const got = await new Promise<Record<string, string>>((resolve, reject) => {
      child.on(
        'message',
        (m: { type?: string; got?: Record<string, string> }) => m.type === 'result' && resolve(m.got!),
      );
      child.once('exit', (code) => reject(new Error(`the asker exited with ${code}`)));
    });
    t.is(got.hosted, 'ok');
    t.is(got.ownJob, 'ok');
    t.regex(got.otherActor, /^PermissionDeniedError: .*not '0123456789abcdef1'/);
    t.regex(got.otherJob, /^PermissionDeniedError: .*\(job\.mine\.…\), not 'job\.theirs\.x'/);
    t.regex(got.malformed, /^ProtocolError: malformed checkpoint request at op/);
    t.deepEqual(reached, ['save 0123456789abcdef0 true as mine', 'save job.mine.x true as mine']);
  },
);
