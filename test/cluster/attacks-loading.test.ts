// Attacks on code loading (issue 22): which module a worker imports is decided by the cluster (the root its job's
// driver registered with the head), never by a message. Each attack is refused with a typed error, runs none of the
// attacker's code (its module would write a marker file at its top level), and the cluster keeps serving.
import test from 'ava';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { init, shutdown, get } from '../../runtime/index.ts';
import { currentCore, newId, type FunctionRef } from '../../runtime/core/core.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import type { JobRef } from '../../runtime/protocol/jobs.ts';
import type { ActorSpec } from '../../runtime/protocol/actors.ts';
import { ActorDiedError, ProtocolError, TaskError } from '../../runtime/base/errors.ts';
import { startLibraryActor, LIBRARY_ACTORS } from '../../actors/library/runtime.ts';
import { startCluster, eventually, type TestCluster } from '../helpers/cluster.ts';

const troupe = pathToFileURL(join(import.meta.dirname, '..', '..', 'runtime', 'index.ts')).href;

/** The job's own code: inside its root. */
const workModule = `
import { remote, Actor } from '${troupe}';
export const ping = remote((x: number) => x + 1);
export const cwd = remote(() => process.cwd());
@remote()
export class Echo extends Actor {
  echo(x: unknown) {
    return x;
  }
  worker() {
    return process.env.TROUPE_WORKER_ID;
  }
}
`;

/** The attacker's code: its top level writes a marker, so a test sees whether any of it ran. */
const evilModule = (marker: string) => `
import { writeFileSync } from 'node:fs';
import { remote, Actor } from '${troupe}';
writeFileSync(${JSON.stringify(marker)}, String(process.pid));
export const f = remote(() => 'ran');
export class Evil extends Actor {}
export const job = { spec: {} };
`;

let c: TestCluster | undefined;
let top = '';
let root = '';
let markers = '';
/** One actor of the job for every test (made after the first: see there). */
let echo: undefined | { echo(x: unknown): PromiseLike<unknown>; worker(): PromiseLike<string> };
let work: {
  ping: { remote(x: number): PromiseLike<number> };
  cwd: { remote(): PromiseLike<string> };
  Echo: { remote(): { echo(x: unknown): PromiseLike<unknown>; worker(): PromiseLike<string> } };
};

/** A module outside the root (a symlink to one from inside, when `via` is given), with its marker's path. */
function evil(name: string): { url: string; marker: string } {
  const marker = join(markers, name);
  const file = join(top, 'outside', `${name}.ts`);
  writeFileSync(file, evilModule(marker));
  return { url: pathToFileURL(file).href, marker };
}
const ref = (url: string, exportName: string): FunctionRef => ({ url, exportName, name: exportName });

test.serial.before(async () => {
  top = realpathSync(mkdtempSync(join(tmpdir(), 'troupe-attack-')));
  root = join(top, 'proj');
  markers = join(top, 'markers');
  for (const d of [root, markers, join(top, 'outside')]) mkdirSync(d, { recursive: true });
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'proj', private: true, type: 'module' }));
  writeFileSync(join(root, 'work.ts'), workModule);
  symlinkSync(join(top, 'outside'), join(root, 'linked')); // from inside the root to outside it
  c = await startCluster({ head: { numCpus: 4 } });
  // This process is the job's driver; its root is the project above (registered with the head as it connects).
  await init({ runtimeEnv: { workingDir: root } });
  work = (await import(pathToFileURL(join(root, 'work.ts')).href)) as typeof work;
});
test.serial.after.always(async () => {
  await shutdown();
  await c?.stop();
  if (top) rmSync(top, { recursive: true, force: true });
});

/** The cluster still runs the job's tasks and actors, and no attacker module ran. */
async function stillServing(t: import('ava').ExecutionContext): Promise<void> {
  t.is(await work.ping.remote(41), 42);
  echo ??= work.Echo.remote();
  t.is(await echo.echo('still'), 'still');
  t.deepEqual(readdirSync(markers), [], 'no module of the attacker ran');
}

test.serial('a lease naming the job with another root gets a worker of the registered root', async (t) => {
  // First of the file: no worker is bound to the job yet, so the lease binds a fresh one with the job it carries.
  const core = currentCore();
  const own = core.job!;
  const { url, marker } = evil('forged-root');
  // What the lease request names: the job's id with another root, and no runtime env (so a node would use that root
  // in place).
  core.job = { id: own.id, driver: own.driver, root: join(top, 'outside') };
  try {
    const r = core.submitTask<string>(ref(url, 'f'), [], { numCpus: 1 });
    const e = await t.throwsAsync(get(r), { instanceOf: TaskError });
    t.is(e?.remoteName, 'ModuleRefusedError');
    t.regex(e!.message, /outside the job's root .*proj/);
  } finally {
    core.job = own;
  }
  t.false(existsSync(marker));
  await stillServing(t);
});

test.serial('a lease request for a job no driver registered is refused by the head', async (t) => {
  const bus = await Bus.connect({ address: c!.address, token: c!.token, name: 'attacker' });
  t.teardown(() => bus.close());
  const job: JobRef = { id: 'forged-job', driver: 'attacker', root: join(top, 'outside') };
  await t.throwsAsync(
    bus.request(subjects.headLease, {
      reqId: 'r1',
      clientId: 'attacker',
      demand: { CPU: 1 },
      strategy: 'DEFAULT',
      job,
    }),
    { instanceOf: ProtocolError, message: /forged-job, which no driver registered/ },
  );
  await stillServing(t);
});

test.serial(
  "a second driver registering an existing job id is refused: the job's root is never replaced",
  async (t) => {
    const bus = await Bus.connect({ address: c!.address, token: c!.token, name: 'attacker' });
    t.teardown(() => bus.close());
    const own = currentCore().job!;
    for (const job of [
      { ...own, driver: 'another-driver' },
      { ...own, root: join(top, 'outside') },
      { ...own, driver: 'another-driver', root: join(top, 'outside') },
    ])
      await t.throwsAsync(bus.request(subjects.headJobRegister, { job }), {
        instanceOf: ProtocolError,
        message: /is registered already/,
      });
    // The same job from another driver's user (none, or its own) is refused too: only the user that registered it
    // may act as its driver (JobRegistration.key). Its own driver's resend is answered as the first was.
    const key = currentCore().bus.user!.user.publicKey;
    for (const registration of [{ job: own }, { job: own, key: bus.user!.user.publicKey }])
      await t.throwsAsync(bus.request(subjects.headJobRegister, registration), { message: /is registered already/ });
    t.deepEqual(await currentCore().bus.request(subjects.headJobRegister, { job: own, key }), { registered: own.id });
    await stillServing(t);
  },
);

test.serial(
  'a library actor given a data: URL (or any module outside the root) as its spec runs none of it',
  async (t) => {
    const data = evil('data-url'); // for its marker; the code itself goes in the URL
    const code = `import { writeFileSync } from 'node:fs';
writeFileSync(${JSON.stringify(data.marker)}, '');
export const job = { spec: {} };`;
    const specs = [
      `data:text/javascript,${encodeURIComponent(code)}`,
      evil('spec-outside').url,
      pathToFileURL(join(root, 'linked', 'spec-link.ts')).href,
      LIBRARY_ACTORS.Replica, // troupe's own modules are actor classes, never a job's spec
    ];
    evil('spec-link');
    for (const url of specs) {
      const ps = startLibraryActor<{ init(v: Float32Array): PromiseLike<void> }>(
        'ParamServer',
        [{ job: { url, exportName: 'job' }, run: 'attack', shard: 0, staleness: 0, replicas: 1 }],
        {},
      );
      const e = await t.throwsAsync(get(ps.init(new Float32Array(1))), { instanceOf: ActorDiedError }, url);
      t.regex(e!.message, /ModuleRefusedError: (refusing to load|cannot load)/, url.slice(0, 60));
    }
    await stillServing(t);
  },
);

test.serial(
  'a task or actor class in a file outside the root, or behind a symlink out of it, is refused',
  async (t) => {
    const core = currentCore();
    const outside = evil('task-outside');
    evil('link');
    const linked = pathToFileURL(join(root, 'linked', 'link.ts')).href;
    for (const url of [outside.url, linked, 'data:text/javascript,export const f = 1', 'node:child_process']) {
      const e = await t.throwsAsync(get(core.submitTask(ref(url, 'f'), [], {})), { instanceOf: TaskError }, url);
      t.is(e?.remoteName, 'ModuleRefusedError');
      const actorId = core.createActor(ref(url, 'Evil'), [], { className: 'Evil' });
      const gcs = await core.gcs();
      const dead = await eventually('the actor ended', async () => {
        const a = await gcs.actors.get(actorId);
        return a?.state === 'DEAD' && a;
      });
      t.regex(dead.cause ?? '', /constructor threw ModuleRefusedError: (refusing to load|only file)/);
    }
    await stillServing(t);
  },
);

test.serial("a task whose message names another working directory runs in the job's root", async (t) => {
  const core = currentCore();
  const own = core.workingDir;
  core.workingDir = () => join(top, 'outside'); // what the task's message names
  try {
    t.is(await work.cwd.remote(), root);
  } finally {
    core.workingDir = own;
  }
  t.is(await work.cwd.remote(), root, 'the driver runs in the repository: outside the root too');
  await stillServing(t);
});

test.serial('actor ids and jobs from the bus are checked: wildcards, dots and foreign jobs are refused', async (t) => {
  const core = currentCore();
  echo ??= work.Echo.remote();
  t.is(await echo.echo(1), 1);
  const workerId = await echo.worker();
  const gcs = await core.gcs();
  const info = (await gcs.actors.list()).find((a) => a.workerId === workerId && a.state === 'ALIVE')!;
  const spec: ActorSpec = info.spec;
  const bus = await Bus.connect({ address: c!.address, token: c!.token, name: 'attacker' });
  t.teardown(() => bus.close());
  // Only a node may send its workers actor starts and stops: sent as a node here, they are checked all the same.
  const asNode = await Bus.connect({ address: c!.address, token: c!.joinToken, name: 'attacker-node' });
  t.teardown(() => asNode.close());
  for (const actorId of ['*', '>', `${spec.actorId}.x`, '', 'a'.repeat(200), 'deadbeef'])
    await t.throwsAsync(
      asNode.request(subjects.procActorStart(workerId), { spec: { ...spec, actorId }, incarnation: 0 }),
      {
        instanceOf: ProtocolError,
        message: /actor start needs an actor id|malformed actor start request at spec.actorId/,
      },
      `start ${actorId}`,
    );
  const foreign = { ...spec, actorId: newId(), job: { ...spec.job!, id: 'another-job' } };
  await t.throwsAsync(asNode.request(subjects.procActorStart(workerId), { spec: foreign, incarnation: 0 }), {
    instanceOf: ProtocolError,
    message: /job another-job: this worker serves job/,
  });
  await t.throwsAsync(asNode.request(subjects.procActorStop(workerId), { actorId: '*' }), {
    instanceOf: ProtocolError,
  });
  for (const [subject, msg] of [
    [subjects.headActorCreate, { spec: { ...spec, actorId: '*' } }],
    [subjects.headActorKill, { actorId: '>' }],
    [subjects.headActorRestart, { actorId: '*', supervisor: spec.actorId }],
  ] as const)
    await t.throwsAsync(bus.request(subject, msg), { instanceOf: ProtocolError }, subject);
  // An actor created for a job the head does not know is refused too.
  await t.throwsAsync(bus.request(subjects.headActorCreate, { spec: foreign }), {
    instanceOf: ProtocolError,
    message: /another-job, which no driver registered/,
  });
  t.is(await echo.echo(2), 2, 'the actor on that worker still serves');
  await stillServing(t);
});
