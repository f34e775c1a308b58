// Attacks as the wrong role, against a real cluster: each is refused by nats-server (the role's subject permissions,
// runtime/protocol/permissions.ts), and the cluster keeps serving tasks and actor calls after it.
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import type { ActorHandle } from '../../runtime/index.ts';
import { currentCore } from '../../runtime/core/core.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { AuthenticationError, PermissionDeniedError, ProtocolError } from '../../runtime/base/errors.ts';
import { AckPolicy, DeliverPolicy, jetstreamManager, StorageType } from '@nats-io/jetstream';
import { checkpointDeleteSigned, jobCheckpointName } from '../../runtime/protocol/checkpoints.ts';
import { addIdentity, builtinIdentity, readIdentities, revokeIdentity } from '../../runtime/cluster/identities.ts';
import { Gcs } from '../../runtime/state/gcs.ts';
import { pushAccount } from '../../runtime/cluster/account-update.ts';
import { useCluster, eventually, runCommand, checkpointStoreOf, headBusOf } from '../helpers/cluster.ts';
import { Counter } from '../fixtures/actors.ts';
import { add } from '../fixtures/tasks.ts';
import {
  checkpointAttacks,
  environment,
  outcome,
  publishAs,
  storeAttacks,
  subscribeAs,
  workerCreatesConsumer,
  workerCreatesStream,
  writeKv,
} from '../fixtures/role-attacks.ts';

const cluster = useCluster(test, { head: { numCpus: 2 } });
const cli = join(import.meta.dirname, '..', '..', 'runtime', 'cli', 'troupe.mjs');

let counter: ActorHandle<Counter>;
test.serial.before(async () => {
  counter = Counter.remote(0);
  await counter.add(0);
});

/** The cluster still serves: its node is alive, a task runs, the actor answers. */
async function stillServing(t: ExecutionContext): Promise<void> {
  const status = await cluster().status();
  t.true(
    status.nodes.some((n) => n.nodeId === cluster().head.nodeId && n.alive),
    'the node is alive',
  );
  t.is(await add.remote(2, 3), 5);
  const before = await counter.value();
  t.is(await counter.add(1), before + 1);
}

/** The head's node is not fenced: it keeps running for a while after the forged message. */
async function notFenced(t: ExecutionContext): Promise<void> {
  await new Promise((r) => setTimeout(r, 1000));
  const node = (await cluster().status()).nodes.find((n) => n.nodeId === cluster().head.nodeId);
  t.true(node?.alive, 'the head node is alive');
}

const ids = () => readIdentities(cluster().head.sessionDir);
const push = () => pushAccount({ sessionDir: cluster().head.sessionDir, address: cluster().address });

test.serial('a worker cannot fence a node', async (t) => {
  const denied = await publishAs.remote(subjects.nodeFenced(cluster().head.nodeId), { cause: 'forged by a worker' });
  t.true(denied > 0, 'the server denied the publish');
  await notFenced(t);
  await stillServing(t);
});

test.serial("a worker cannot forge a worker_died, an actor_state or a driver's lease grant", async (t) => {
  const actorId = counter.actorId;
  const nodeId = cluster().head.nodeId;
  const forged: Array<[string, unknown]> = [
    [subjects.evtWorkerDied, { workerId: 'w', nodeId, pid: 1, cause: 'forged', leaseIds: [], actorIds: [actorId] }],
    [subjects.evtActorState, { actorId, state: 'DEAD', incarnation: 1e9, cause: 'forged' }],
    [subjects.procLeaseGranted(currentCore().procId), { reqId: 'r', error: new Error('forged') }],
  ];
  for (const [subject, body] of forged) t.true((await publishAs.remote(subject, body)) > 0, `${subject} denied`);
  await stillServing(t);
});

// Its node signs each worker's user with the worker credential and tags it with the worker's process and node; the
// worker holds no signing key, so it cannot make a user with other tags (bus/credential.ts issueUser).
test.serial("a worker cannot hear another worker's tasks or actor calls, or any process's objects", async (t) => {
  const { workerId } = (await (await currentCore().gcs()).actors.get(counter.actorId))!;
  const others = [
    subjects.actorCall(workerId!, counter.actorId, '*'),
    subjects.procTask(workerId!),
    'troupe.proc.*.>',
    subjects.obj.procRead(currentCore().procId), // this driver's objects
    subjects.procLeaseGranted(currentCore().procId),
  ];
  const { denied, procId } = await subscribeAs.remote(others);
  t.not(procId, workerId, 'the attacker is another worker');
  t.deepEqual(
    denied.map((n) => n > 0),
    others.map(() => true),
    JSON.stringify(others),
  );
  // Its own process's subjects, which it serves, are its.
  t.deepEqual((await subscribeAs.remote([subjects.procTask('{self}'), 'troupe.proc.{self}.>'])).denied, [0, 0]);
  await stillServing(t);
});

test.serial('a worker cannot put or delete a KV key', async (t) => {
  const nodeId = cluster().head.nodeId;
  const r = await writeKv.remote('troupe-nodes', nodeId);
  t.not(r.put, 'ok');
  t.not(r.delete, 'ok');
  const gcs = await Gcs.open(currentCore().bus);
  t.is((await gcs.nodes.get(nodeId))?.nodeId, nodeId, 'the node record is intact');
  await stillServing(t);
});

test.serial(
  "a worker reaches checkpoints only through its node: its own actors' and its job's, not another actor's, another " +
    "job's or the store's",
  async (t) => {
    const store = await checkpointStoreOf(t, cluster());
    await store.save(counter.actorId, { secret: 1 });
    try {
      const got = await checkpointAttacks.remote(counter.actorId, 'another-job');
      for (const [what, answer] of Object.entries(got.direct)) t.regex(answer, /permissions violation/i, what);
      const { ownJob, ...others } = got.viaNode;
      for (const [what, answer] of Object.entries(others))
        t.regex(answer, /^PermissionDeniedError: a worker may use the checkpoints of the actors it hosts/, what);
      t.is(ownJob, 'ok');
      t.deepEqual((await store.load(counter.actorId))?.state, { secret: 1 }, 'the checkpoint is intact');
    } finally {
      await store.delete(counter.actorId);
    }
    await stillServing(t);
  },
);

test.serial(
  "a driver cannot read, overwrite or purge checkpoints; the head removes its job's for it, and no actor's",
  async (t) => {
    const store = await checkpointStoreOf(t, cluster());
    const job = currentCore().job!;
    const run = jobCheckpointName(job.id, 'train-r1');
    await store.save(counter.actorId, { secret: 1 });
    await store.save(run, { weights: [1, 2] });
    t.teardown(() => store.delete(counter.actorId));
    // With its own connection, straight to the store: every access is refused by nats-server.
    const direct = await storeAttacks(currentCore().bus.nc, counter.actorId);
    for (const [what, answer] of Object.entries(direct)) t.regex(answer, /permissions violation/i, what);
    // Through the head: an actor's checkpoint is not its job's, and a job the head does not know is refused.
    const asHead = (req: unknown) => outcome(() => currentCore().bus.request(subjects.headCheckpointDelete, req));
    const signed = (name: string) =>
      currentCore().bus.user!.user.sign(checkpointDeleteSigned(job.id, name)).toString('base64url');
    t.regex(
      await asHead({ job, name: counter.actorId, proof: signed(counter.actorId) }),
      /^PermissionDeniedError: a driver may remove only its job's/,
    );
    t.regex(await asHead({ job: { ...job, id: 'nobody' }, name: 'job.nobody.x' }), /^ProtocolError: .*no driver/);
    t.deepEqual((await store.load(counter.actorId))?.state, { secret: 1 }, 'the actor checkpoint is intact');
    // Another driver naming this job, with the same credential: it cannot sign as the user this driver registered
    // the job with.
    const other = await Bus.connect({ address: cluster().address, token: cluster().token, name: 'other-driver' });
    t.teardown(() => other.close());
    const byOther = (proof?: string) =>
      outcome(() => other.request(subjects.headCheckpointDelete, { job, name: run, ...(proof ? { proof } : {}) }));
    const forged = other.user!.user.sign(checkpointDeleteSigned(job.id, run)).toString('base64url');
    for (const answer of [await byOther(), await byOther(forged), await byOther('x'.repeat(86))])
      t.regex(answer, /^PermissionDeniedError: only the driver that registered job/);
    t.deepEqual((await store.load(run))?.state, { weights: [1, 2] }, "the job's checkpoint is intact");
    // What train() does when it returns: its run's checkpoint goes.
    const mine = await currentCore().checkpoints();
    await t.throwsAsync(mine.load(run), { instanceOf: PermissionDeniedError });
    await mine.delete(run);
    t.is(await store.load(run), undefined);
    await stillServing(t);
  },
);

test.serial('a driver cannot fence a node', async (t) => {
  const bus = currentCore().bus;
  const subject = subjects.nodeFenced(cluster().head.nodeId);
  bus.publish(subject, { cause: 'forged by a driver' });
  await eventually('the publish denied', async () => (bus.denied.get(subject) ?? 0) > 0, 5000);
  await t.throwsAsync(bus.request(subjects.nodeLease(cluster().head.nodeId), {}, { timeoutMs: 8000 }), {
    instanceOf: PermissionDeniedError,
  });
  await notFenced(t);
  await stillServing(t);
});

test.serial("a driver cannot end another's actor by releasing its lease (its id is in cluster state)", async (t) => {
  const info = (await (await currentCore().gcs()).actors.get(counter.actorId))!;
  t.truthy(info.leaseId, 'the actor record names its lease');
  await t.throwsAsync(
    currentCore().bus.request(subjects.nodeRelease(info.nodeId!), { leaseId: info.leaseId, busy: true }),
    { instanceOf: ProtocolError, message: /holds an actor: only the head ends it/ },
  );
  await stillServing(t);
});

test.serial('a worker or driver cannot create a stream (one could capture the cluster traffic)', async (t) => {
  const jsm = await jetstreamManager(currentCore().bus.nc);
  // The shared object stores are there from the start, made by the head, with their own subjects only (a driver may
  // not read the checkpoints' stream: the head's identity looks).
  const head = await headBusOf(t, cluster());
  for (const name of ['troupe-checkpoints', 'troupe-runtime-envs']) {
    const info = await (await jetstreamManager(head.nc)).streams.info(`OBJ_${name}`);
    t.deepEqual(info.config.subjects.sort(), [`$O.${name}.C.>`, `$O.${name}.M.>`]);
  }
  const capture = { subjects: ['troupe.head.>', 'troupe.node.>'], storage: StorageType.Memory };
  for (const name of ['OBJ_troupe-checkpoints', 'OBJ_troupe-runtime-envs', 'capture'])
    await t.throwsAsync(jsm.streams.add({ name, ...capture }), { message: /permissions violation/i }, name);
  t.is(await workerCreatesStream.remote(cluster().address), 'denied');
  await stillServing(t);
});

test.serial(
  'a worker, driver or cli cannot make a JetStream consumer: each costs the servers (a durable one, a raft group)',
  async (t) => {
    t.regex(await workerCreatesConsumer.remote(), /permissions violation/i);
    const cli = await Bus.connect({
      address: cluster().address,
      token: builtinIdentity(ids(), 'cli').credential,
      name: 'cli',
    });
    t.teardown(() => cli.close());
    // The job log stream is there (nodes make it when they start): a consumer could be made, were it allowed.
    t.truthy(await (await jetstreamManager((await headBusOf(t, cluster())).nc)).streams.info('troupe-job-logs'));
    for (const [role, bus] of [
      ['driver', currentCore().bus],
      ['cli', cli],
    ] as const) {
      const jsm = await jetstreamManager(bus.nc, { timeout: 3000 });
      for (const stream of ['KV_troupe-actors', 'OBJ_troupe-runtime-envs', 'OBJ_troupe-checkpoints', 'troupe-job-logs'])
        await t.throwsAsync(
          jsm.consumers.add(stream, { durable_name: 'kept', ack_policy: AckPolicy.None }),
          { message: /permissions violation/i },
          `${role} on ${stream}`,
        );
    }
    await stillServing(t);
  },
);

test.serial(
  'the cli role cannot have a stream deliver onto a node subject: troupe drops JetStream deliveries',
  async (t) => {
    // A push consumer's deliver_subject is not checked against its creator's permissions (nats-server): a role that
    // may read a stream could have it replay records onto any subject. The node drops what JetStream delivers.
    const bus = await Bus.connect({
      address: cluster().address,
      token: builtinIdentity(ids(), 'cli').credential,
      name: 'cli',
    });
    t.teardown(() => bus.close());
    const jsm = await jetstreamManager(bus.nc);
    const name = `deliver-${Date.now()}`;
    await jsm.consumers
      .add('KV_troupe-actors', {
        name,
        deliver_subject: subjects.nodeFenced(cluster().head.nodeId),
        ack_policy: AckPolicy.None,
        deliver_policy: DeliverPolicy.All,
      })
      .then(
        () =>
          t.teardown(() =>
            jsm.consumers.delete('KV_troupe-actors', name).then(
              () => undefined,
              () => undefined,
            ),
          ),
        () => undefined, // a server that checks deliver_subject refuses it: as good
      );
    await notFenced(t);
    await stillServing(t);
  },
);

test.serial('the cli role cannot submit a job or kill an actor', async (t) => {
  const bus = await Bus.connect({
    address: cluster().address,
    token: builtinIdentity(ids(), 'cli').credential,
    name: 'cli',
  });
  t.teardown(() => bus.close());
  // What it may do: read the status.
  t.true((await bus.request<{ nodes: unknown[] }>(subjects.headStatus, {})).nodes.length > 0);
  const submit = { argv: ['sh', '-c', 'echo owned'], workingDir: '/' };
  await t.throwsAsync(bus.request(subjects.nodeJobSubmit(cluster().head.nodeId), submit, { timeoutMs: 8000 }), {
    instanceOf: PermissionDeniedError,
  });
  await t.throwsAsync(
    bus.request(subjects.headActorKill, { actorId: counter.actorId, noRestart: true }, { timeoutMs: 8000 }),
    { instanceOf: PermissionDeniedError },
  );
  await stillServing(t);
});

// Every connection signs a user of its own with its credential (runtime/bus/credential.ts), so replies to one cannot be
// read by another that holds the same credential: every worker holds the worker credential, and drivers on the head's
// machine share the built-in driver credential.
test.serial("a connection cannot read another's replies, though it holds the same credential", async (t) => {
  const credential = builtinIdentity(ids(), 'driver').credential;
  const connect = (name: string) => Bus.connect({ address: cluster().address, token: credential, name });
  const [eve, bob] = [await connect('eve'), await connect('bob')];
  t.teardown(() => Promise.all([eve.close(), bob.close()]));
  const bobs = bob.inbox.split('.').slice(0, 2).join('.'); // `_INBOX.<bob's user>`: his replies come under it
  t.false(eve.inbox.startsWith(`${bobs}.`), 'each connection has an inbox of its own');
  const heard: string[] = [];
  eve.nc.subscribe(`${bobs}.>`, {
    callback: (e, m) => {
      if (!e) heard.push(m.subject);
    },
  });
  await eve.nc.flush();
  t.true((await bob.request<{ nodes: unknown[] }>(subjects.headStatus, {})).nodes.length > 0, 'bob is answered');
  await eventually('the subscription denied', async () => (eve.denied.get(`${bobs}.>`) ?? 0) > 0, 5000);
  t.deepEqual(heard, [], 'eve heard none of it');
  await stillServing(t);
});

test.serial('a revoked credential is disconnected and refused', async (t) => {
  t.timeout(90_000);
  const dir = cluster().head.sessionDir;
  const mallory = addIdentity(dir, 'driver', 'mallory');
  await push();
  const connect = () => Bus.connect({ address: cluster().address, token: mallory.credential, name: 'mallory' });
  const bus = await connect();
  t.teardown(() => bus.close());
  t.true((await bus.request<{ nodes: unknown[] }>(subjects.headStatus, {})).nodes.length > 0);
  revokeIdentity(dir, 'mallory');
  await push();
  await eventually('the connection closed by the server', async () => bus.isClosed, 15_000);
  await t.throwsAsync(connect(), { instanceOf: AuthenticationError });
  await stillServing(t);
});

// Creating a credential re-signs the cluster's account and pushes it to the servers: connections made meanwhile with
// another credential are not refused (in config mode, a reload refused 1 to 3 of these).
test.serial('a good credential connecting while the account is updated is not refused', async (t) => {
  t.timeout(60_000);
  const credential = builtinIdentity(ids(), 'driver').credential;
  const failed: string[] = [];
  for (let i = 0; i < 10; i++) {
    addIdentity(cluster().head.sessionDir, 'cli', `updating-${i}`);
    await Promise.all([
      push(),
      ...[0, 1, 2, 3].map(async (ms) => {
        await new Promise((r) => setTimeout(r, ms));
        try {
          await (await Bus.connect({ address: cluster().address, token: credential, name: 'updating' })).close();
        } catch (e) {
          failed.push(`update ${i}, +${ms} ms: ${(e as Error).name}: ${(e as Error).message}`);
        }
      }),
    ]);
  }
  t.deepEqual(failed, []);
  await stillServing(t);
});

test.serial('--token on the command line is refused, naming the alternatives', async (t) => {
  const r = await runCommand(
    process.execPath,
    [cli, 'status', '--token', builtinIdentity(ids(), 'driver').credential],
    {
      env: { TROUPE_HOME: cluster().home },
    },
  );
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /--token is not accepted.*--token-file/s);
  const fromFile = await runCommand(process.execPath, [cli, 'status', '--token-file', '-'], {
    env: { TROUPE_HOME: cluster().home },
  });
  t.is(fromFile.code, 2, 'stdin is empty here: a clear error, not a hang');
  t.regex(fromFile.stderr, /--token-file - is empty/);
});

test.serial("a worker's environment holds no credential", async (t) => {
  const { env, proc } = await environment.remote();
  for (const id of ids()) {
    const seed = id.credential.split('.')[0]; // the secret half; the other is the account's public key
    t.false(env.includes(seed), `${id.role}'s seed in process.env`);
    t.false(proc.includes(seed), `${id.role}'s seed in /proc/self/environ`);
  }
  t.false(/TROUPE_TOKEN|TROUPE_DAEMON_CONFIG/.test(proc));
  await stillServing(t);
});
