// The JetStream object stores every job shares are bounded: checkpoints (TROUPE_CHECKPOINT_STORE_BYTES, 1 MiB here,
// of which one job may hold half) and shipped code (TROUPE_RUNTIME_ENV_STORE_BYTES). A put past the bound is a
// ClusterStoreFullError and drops nothing; room comes back as actors end, and the head deletes the shipped code no job
// it knows uses (every 500 ms here, with no grace).
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { Objm, type ObjectStore } from '@nats-io/obj';
import { kill, ClusterStoreFullError, TaskError, type ActorHandle } from '../../runtime/index.ts';
import { useCluster, eventually, checkpointStoreOf, headBusOf } from '../helpers/cluster.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { openEnvStore, putObject } from '../../runtime/shipping/env-store.ts';
import { sweepEnvStore } from '../../runtime/shipping/env-sweep.ts';
import { objectNames } from '../../runtime/shipping/manifest.ts';
import type { RuntimeEnvRef } from '../../runtime/protocol/jobs.ts';
import { Ballast } from '../fixtures/supervised.ts';

// Read by the head daemon this file's cluster starts.
process.env.TROUPE_CHECKPOINT_STORE_BYTES = String(1024 * 1024);
process.env.TROUPE_RUNTIME_ENV_STORE_BYTES = String(1024 * 1024);
process.env.TROUPE_RUNTIME_ENV_SWEEP_MS = '500';
process.env.TROUPE_RUNTIME_ENV_GRACE_MS = '0';
const cluster = useCluster(test, { head: { numCpus: 2 } });

const sha = (s: string) => createHash('sha256').update(s).digest('hex');
const names = async (os: ObjectStore) => (await os.list()).filter((i) => !i.deleted).map((i) => i.name);

/** The store of shipped code, opened with the head's identity: a driver puts objects there, and never lists them. */
const headEnvStore = async (t: ExecutionContext) => openEnvStore(await headBusOf(t, cluster()));

test.serial(
  "a job's checkpoint past its share (half the store here) is a ClusterStoreFullError; the one saved stays; an ended " +
    'actor makes room',
  async (t) => {
    const a = Ballast.remote(400_000) as ActorHandle<Ballast>;
    const b = Ballast.remote(400_000) as ActorHandle<Ballast>;
    t.teardown(() => Promise.all([kill(a), kill(b)]).then(() => undefined));
    await a.saveCheckpoint();
    // Saving runs in the actor's worker, whose node keeps it as the job's: the call fails with the error there.
    const full = await t.throwsAsync(b.saveCheckpoint(), { instanceOf: TaskError });
    t.is(full.remoteName, 'ClusterStoreFullError');
    const job = currentCore().job!.id;
    t.regex(full.message, new RegExp(`job ${job}'s checkpoints hold 390\\.6 KiB of the 512\\.0 KiB one job may keep`));
    const checkpoints = await checkpointStoreOf(t, cluster());
    t.is((await checkpoints.load<Uint8Array>(a.actorId))?.state.length, 400_000, 'what was saved before stays');
    t.is(await checkpoints.load(b.actorId), undefined);

    const stores = (await cluster().status()).stores ?? [];
    const usage = stores.find((s) => s.name === 'troupe-checkpoints');
    t.is(usage?.maxBytes, 1024 * 1024);
    t.true((usage?.bytes ?? 0) >= 400_000, `${usage?.bytes} bytes held`);
    t.is(stores.find((s) => s.name === 'troupe-runtime-envs')?.maxBytes, 1024 * 1024);

    await kill(a); // its checkpoint goes with it
    await eventually('room for b', async () =>
      b.saveCheckpoint().then(
        () => true,
        () => false,
      ),
    );
    t.is((await checkpoints.load<Uint8Array>(b.actorId))?.state.length, 400_000);
  },
);

test.serial('shipped code past the bound is a ClusterStoreFullError', async (t) => {
  const os = await openEnvStore(currentCore().bus);
  const listed = await headEnvStore(t);
  const name = objectNames.package(sha('too large'));
  const full = await t.throwsAsync(putObject(os, name, new Uint8Array(2 * 1024 * 1024)), {
    instanceOf: ClusterStoreFullError,
  });
  t.regex(full.message, /store of shipped code \(troupe-runtime-envs\) is full.*TROUPE_RUNTIME_ENV_STORE_BYTES/);
  t.false((await names(listed)).includes(name));
});

test.serial('the head deletes shipped code no job it knows uses, and keeps what a registered job names', async (t) => {
  const core = currentCore();
  const os = await openEnvStore(core.bus);
  const listed = await headEnvStore(t);
  const manifest = new TextEncoder().encode(
    JSON.stringify({
      packages: [
        {
          path: 'node_modules/kept',
          name: 'kept',
          version: '1.0.0',
          source: { kind: 'store', object: objectNames.package(sha('kept')) },
        },
      ],
    }),
  );
  const env: RuntimeEnvRef = {
    workingDir: { sha256: sha('used project'), bytes: 10 },
    packages: { sha256: createHash('sha256').update(manifest).digest('hex'), count: 1 },
  };
  const used = [
    objectNames.workingDir(env.workingDir!.sha256),
    objectNames.manifest(env.packages!.sha256),
    objectNames.package(sha('kept')),
  ];
  const unused = [objectNames.workingDir(sha('old project')), objectNames.package(sha('gone'))];
  // Registered first, by this driver (alive, so the job is kept): then nothing of it is ever unnamed.
  const job = { id: `stores-${process.pid}`, driver: core.procId, root: '/nonexistent-root', env };
  await core.bus.request(subjects.headJobRegister, { job });
  await putObject(os, used[0]!, new Uint8Array(10));
  await putObject(os, used[1]!, manifest);
  for (const name of [used[2]!, ...unused]) await putObject(os, name, new Uint8Array(1000));
  await eventually('the unused objects to go', async () => {
    const left = await names(listed);
    return unused.every((n) => !left.includes(n)) || undefined;
  });
  await new Promise((r) => setTimeout(r, 1500)); // three more sweeps
  const left = await names(listed);
  t.deepEqual(
    used.filter((n) => !left.includes(n)),
    [],
    'what the job names stays',
  );
});

test.serial('a sweep keeps young objects, and stops where a job names a manifest it cannot read', async (t) => {
  // Its own store, swept by the test alone.
  const os = await new Objm((await headBusOf(t, cluster())).nc).create('sweep-test');
  const a = objectNames.package(sha('a'));
  await os.putBlob({ name: a }, new Uint8Array(10));
  const now = Date.now();
  t.deepEqual((await sweepEnvStore(os, () => [], { now, graceMs: 60_000 })).deleted, [], 'younger than the grace');
  const lost: RuntimeEnvRef = { packages: { sha256: sha('no such manifest'), count: 1 } };
  await t.throwsAsync(
    sweepEnvStore(os, () => [lost], { now: now + 120_000, graceMs: 60_000 }),
    {
      message: /manifest manifest-\w+ of a job is not in the store/,
    },
  );
  t.deepEqual(await names(os), [a]);
  const swept = await sweepEnvStore(os, () => [], { now: now + 120_000, graceMs: 60_000 });
  t.deepEqual(swept, { deleted: [a], freedBytes: 10 });
});
