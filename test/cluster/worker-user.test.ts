// Workers run as another Unix user than their node daemon (`--worker-user`): a job's code cannot read the daemons'
// credentials (their files, environment or memory), and tasks, actors, objects and lanes work as before. Only root
// starts processes as another user: as anyone else this file says why and runs nothing.
import test from 'ava';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { init, shutdown, put, get } from '../../runtime/api/session.ts';
import { ObjectLostError } from '../../runtime/base/errors.ts';
import { runCommand, startCluster, tempDir, type TestCluster } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { reach, bigArray, total, laneTo, plantLink } from '../fixtures/worker-reach.ts';
import { Counter, Forwarder } from '../fixtures/actors.ts';

const NOBODY = 65534;
const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');
const tsx = import.meta.resolve('tsx');

if (process.getuid?.() !== 0) {
  console.warn('troupe: the --worker-user tests need root (only root starts processes as another user)');
} else {
  let c: TestCluster | undefined;
  test.serial.before(async () => {
    c = await startCluster({ head: { workerUser: 'nobody' } });
    await init();
  });
  test.serial.after.always(async () => {
    await shutdown();
    await c?.stop();
  });

  test.serial('a job cannot read its node daemons’ credentials: files, environment, memory', async (t) => {
    const session = c!.head.sessionDir;
    const secrets = [
      join(session, 'identities.json'), // every role's seed, the head's included
      join(c!.home, 'current-cluster.json'), // the driver credential
      `${session}/`,
      `${c!.home}/`,
    ];
    const r = await reach.remote(secrets);
    t.is(r.uid, NOBODY);
    t.is(r.gid, NOBODY);
    t.is(r.home, join(c!.home, `worker-home-${NOBODY}`));
    t.is(r.daemonEnviron, 'EACCES');
    t.is(r.daemonMemory, 'EACCES');
    t.deepEqual(r.paths, Object.fromEntries(secrets.map((p) => [p, 'EACCES'])));
  });

  test.serial('objects go both ways through the node’s store, and actor calls through lanes', async (t) => {
    // Over the inline limit: files in the store, written by this driver (root) and read by a worker, and back.
    const n = 512 * 1024;
    t.is(await total.remote(put(new Float32Array(n).fill(2))), 2 * n);
    const ref = bigArray.remote(n, 3);
    t.is((await ref).length, n);
    t.is(await total.remote(ref), 3 * n); // written by one worker, read by another
    const counter = Counter.remote(1);
    const forwarder = Forwarder.remote();
    t.is(await counter.add(1), 2);
    t.is(await forwarder.forward(counter, 5), 7); // worker to worker, both as nobody
    // This driver's calls went on the lane (the counter's socket, made by nobody), not through nats-server.
    const { workerId } = (await (await currentCore().gcs()).actors.get(counter.actorId))!;
    const lane = currentCore().bus.laneOf(subjects.actorCall(workerId!, counter.actorId, 0));
    t.truthy(lane);
    t.is(await laneTo.remote(counter), lane);
  });

  test.serial('a link a worker plants in the store is never followed by the node or a driver (root)', async (t) => {
    const secret = join(c!.head.sessionDir, 'identities.json');
    const { ref } = await plantLink.remote(secret);
    const e = await t.throwsAsync(get(ref), { instanceOf: ObjectLostError });
    const why: string[] = [];
    for (let x: unknown = e; x instanceof Error; x = x.cause) why.push(x.message);
    t.regex(why.join(' <- '), /its file in the store is a link/);
    t.is(await total.remote(put(new Float32Array(1000).fill(1))), 1000, 'the store goes on serving');
  });

  test.serial('a driver run for `troupe job submit` runs as the worker user too', async (t) => {
    const dir = join(tempDir(t, 'troupe-worker-user-'), 'proj');
    chmodSync(dirname(dir), 0o755); // the driver, as nobody, runs in it
    mkdirSync(dir);
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'proj', private: true, type: 'module' }));
    const entry = pathToFileURL(join(import.meta.dirname, '..', '..', 'runtime', 'index.ts')).href;
    writeFileSync(
      join(dir, 'tasks.ts'),
      `import { remote } from '${entry}';\nexport const uid = remote(() => process.getuid());\n`,
    );
    writeFileSync(
      join(dir, 'main.ts'),
      `import { init, shutdown } from '${entry}';\nimport { uid } from './tasks.ts';\n` +
        'await init({ logToDriver: false });\n' +
        "console.log('driver uid ' + process.getuid() + ' worker uid ' + (await uid.remote()));\n" +
        'await shutdown();\n',
    );
    const r = await runCommand(
      process.execPath,
      [cli, 'job', 'submit', '--working-dir', dir, '--', process.execPath, '--import', tsx, join(dir, 'main.ts')],
      { env: { TROUPE_HOME: c!.home }, timeoutMs: 90_000 },
    );
    t.is(r.code, 0, r.stdout + r.stderr);
    t.regex(r.stdout, new RegExp(`driver uid ${NOBODY} worker uid ${NOBODY}`));
  });
}
