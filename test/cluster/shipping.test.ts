// Code shipping on one machine. The head's node is on the driver's machine and uses the app in place; a second node
// daemon runs with TROUPE_SHIP_ALWAYS=1 (a test knob: never "the driver's machine"), so it materializes each job's
// copy as a node on another machine would. Work goes to it with resource `far`. The app (test/fixtures/hosts-app: a
// `file:` dependency, a package in node_modules) lives in a temp dir outside the repository; its drivers run as
// child processes and print one JSON line.
import test from 'ava';
import { cpSync, mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand, startCluster, tempDir, type TestCluster } from '../helpers/cluster.ts';
import { startNode, type StartedCluster } from '../../runtime/cluster/local-cluster.ts';
import type { JobInfo } from '../../runtime/protocol/cluster.ts';
import { Gcs } from '../../runtime/state/gcs.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { DriverShipper, PreparedEnv, uploadRuntimeEnv } from '../../runtime/shipping/driver-shipper.ts';
import { EnvCache, StoreSource } from '../../runtime/shipping/env-cache.ts';
import { getObject, openEnvStore, putObject } from '../../runtime/shipping/env-store.ts';
import { packFiles, unpack } from '../../runtime/shipping/pack.ts';
import { scanPackages } from '../../runtime/shipping/packages.ts';

const checkout = join(import.meta.dirname, '..', '..');
const tsx = import.meta.resolve('tsx');
let cluster: TestCluster | undefined;
let far: StartedCluster | undefined;

test.before(async () => {
  cluster = await startCluster({ head: { numCpus: 2, resources: { near: 2 } } });
  process.env.TROUPE_SHIP_ALWAYS = '1'; // the daemon started now inherits it; only node daemons read it
  try {
    far = await startNode({
      detached: false,
      numCpus: 2,
      numGpus: 0,
      resources: { far: 2 },
      objectStoreDir: cluster.home,
      address: cluster.address,
      token: cluster.joinToken,
      sessionDir: cluster.head.sessionDir,
    });
  } finally {
    delete process.env.TROUPE_SHIP_ALWAYS;
  }
});
test.after.always(async () => {
  await far?.stop();
  await cluster?.stop();
});

/** The hosts app, installed in a temp dir as npm would (troupe and the local dependency linked), with a probe. */
function app(t: Parameters<typeof tempDir>[0]): string {
  const dir = join(tempDir(t, 'troupe-ship-app-'), 'app');
  cpSync(join(checkout, 'test', 'fixtures', 'hosts-app'), dir, { recursive: true });
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(checkout, join(dir, 'node_modules', 'troupe'));
  symlinkSync('../greeting', join(dir, 'node_modules', 'greeting'));
  cpSync(join(dir, 'vendor', 'shout'), join(dir, 'node_modules', 'shout'), { recursive: true });
  writeFileSync(
    join(dir, 'probe.ts'),
    [
      "import { remote } from 'troupe';",
      "import { words } from './words.mjs';",
      'export const probe = remote(() => ({',
      '  cwd: process.cwd(),',
      '  url: import.meta.url,',
      '  mode: process.env.APP_MODE,',
      '  words: words(),',
      '}));',
      '',
    ].join('\n'),
  );
  return dir;
}

function driver(dir: string, name: string, body: string): void {
  writeFileSync(join(dir, name), `import { init } from 'troupe';\n${body}`);
}

async function drive(dir: string, entry: string): Promise<Record<string, unknown>> {
  const r = await runCommand(process.execPath, ['--import', tsx, '--conditions=troupe-source', entry], {
    cwd: dir,
    timeoutMs: 90_000,
    env: { TROUPE_HOME: cluster!.home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' },
  });
  const line = r.stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .pop();
  if (r.code !== 0 || !line) throw new Error(`driver ${entry} exit ${r.code ?? r.signal}:\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(line) as Record<string, unknown>;
}

async function jobRecord(jobId: string): Promise<JobInfo | undefined> {
  const bus = await Bus.connect({ address: cluster!.address, token: cluster!.token, name: 'shipping-test' });
  try {
    return await (await Gcs.open(bus)).jobs.get(jobId);
  } finally {
    await bus.close();
  }
}

test.serial(
  'tasks and actors run in the copy, with its dependencies and variables; a second job ships nothing',
  async (t) => {
    t.timeout(180_000);
    const dir = app(t);
    driver(
      dir,
      'ship.ts',
      [
        "import { probe } from './probe.ts';",
        "import { Placed } from './actors.ts';",
        "const { jobId } = await init({ runtimeEnv: { env: { APP_MODE: 'shipped' } } });",
        'const far = { resources: { far: 1 } };',
        'const actor = Placed.options(far).remote();',
        'const here = await probe.options({ resources: { near: 1 } }).remote();',
        'const shipped = await probe.options(far).remote();',
        'console.log(JSON.stringify({ jobId, probe: shipped, here, words: await actor.words() }));',
      ].join('\n'),
    );
    const first = await drive(dir, 'ship.ts');
    const probe = first.probe as { cwd: string; url: string; mode: string; words: string };
    const envs = join(cluster!.home, 'runtime-envs', 'envs');
    t.true(probe.cwd.startsWith(`${envs}/`), `the task ran in the node's copy: ${probe.cwd}`);
    t.true(probe.url.startsWith(`file://${envs}/`), `its module loaded from the copy: ${probe.url}`);
    t.is(probe.mode, 'shipped', 'runtimeEnv.env reached the worker');
    t.regex(probe.words, /^HELLO FROM .*!$/, 'the file: dependency and the node_modules package resolved in the copy');
    t.regex(first.words as string, /^HELLO FROM .*!$/, 'the actor too');
    t.is(readFileSync(join(probe.cwd, 'package.json'), 'utf8'), readFileSync(join(dir, 'package.json'), 'utf8'));
    const here = first.here as { cwd: string; mode: string };
    t.is(realpathSync(here.cwd), realpathSync(dir), "the node on the driver's machine ran it in place");
    t.is(here.mode, 'shipped', 'runtimeEnv.env applies on local nodes too');
    const once = (await jobRecord(first.jobId as string))?.shippedBytes ?? 0;
    t.true(once > 0, `the first job uploaded its project and packages (${once} bytes)`);

    const second = await drive(dir, 'ship.ts');
    t.is((second.probe as { cwd: string }).cwd, probe.cwd, 'the same copy, from the cache');
    t.is((await jobRecord(second.jobId as string))?.shippedBytes, 0, 'the second job uploaded nothing');
  },
);

test.serial('a native package the node lacks fails the task with a RuntimeEnvError naming it', async (t) => {
  t.timeout(120_000);
  const dir = app(t);
  mkdirSync(join(dir, 'node_modules', 'fancy'));
  writeFileSync(join(dir, 'node_modules', 'fancy', 'package.json'), '{"name":"fancy","version":"4.5.6"}');
  writeFileSync(join(dir, 'node_modules', 'fancy', 'binding.gyp'), '{}');
  driver(
    dir,
    'native.ts',
    [
      "import { probe } from './probe.ts';",
      'await init();',
      'const out = await probe',
      '  .options({ resources: { far: 1 } })',
      '  .remote()',
      '  .then(() => ({ ran: true }), (e) => ({ name: e.name, message: e.message }));',
      'console.log(JSON.stringify(out));',
    ].join('\n'),
  );
  const out = await drive(dir, 'native.ts');
  t.is(out.name, 'RuntimeEnvError', JSON.stringify(out));
  t.regex(out.message as string, /fancy@4\.5\.6.*native parts.*no fancy/);
});

test.serial('a project over runtimeEnv.maxBytes fails init() with the largest files', async (t) => {
  const dir = app(t);
  writeFileSync(join(dir, 'big.bin'), Buffer.alloc(4096));
  driver(
    dir,
    'big.ts',
    [
      'const out = await init({ runtimeEnv: { maxBytes: 2048 } })',
      '  .then(() => ({ joined: true }), (e) => ({ name: e.name, message: e.message }));',
      'console.log(JSON.stringify(out));',
    ].join('\n'),
  );
  const out = await drive(dir, 'big.ts');
  t.is(out.name, 'RuntimeEnvError');
  t.regex(out.message as string, /big\.bin \(4\.0 KiB\).*\.troupeignore/);
});

test.serial(
  'two drivers uploading the same items at once both succeed; a node then materializes from the store alone',
  async (t) => {
    t.timeout(120_000);
    const dir = app(t);
    writeFileSync(join(dir, 'unique.txt'), `${process.hrtime.bigint()}`); // a project the store has not seen
    const [a, b] = await Promise.all([PreparedEnv.prepare({}, dir), PreparedEnv.prepare({}, dir)]);
    t.teardown(() => {
      a.close();
      b.close();
    });
    t.deepEqual(a.ref.workingDir, b.ref.workingDir, 'the same files, the same hash');
    const connect = (name: string) => Bus.connect({ address: cluster!.address, token: cluster!.token, name });
    const [one, two] = await Promise.all([connect('driver-1'), connect('driver-2')]);
    t.teardown(() => Promise.all([one.close(), two.close()]));
    const sent = await Promise.all([new DriverShipper(one, a).shipAll(), new DriverShipper(two, b).shipAll()]);
    t.true(sent[0] + sent[1] > 0, `uploaded ${sent}`);

    // No driver to ask (as for a submitted job): everything comes from the store, checked against its hashes, read
    // as a node reads it (a driver may put objects, not read them).
    const node = await Bus.connect({ address: cluster!.address, token: cluster!.joinToken, name: 'node' });
    t.teardown(() => node.close());
    const cache = new EnvCache(new StoreSource(node), { dir: tempDir(t, 'troupe-ship-cache-') });
    const copy = await cache.materialize(a.ref, dir);
    t.is(readFileSync(join(copy, 'unique.txt'), 'utf8'), readFileSync(join(dir, 'unique.txt'), 'utf8'));
    t.is(readFileSync(join(copy, 'node_modules', 'shout', 'package.json'), 'utf8').includes('"shout"'), true);

    // uploadRuntimeEnv() (for `troupe job submit`) finds nothing missing now and returns the same reference.
    const ref = await uploadRuntimeEnv(one, { workingDir: dir });
    t.deepEqual(ref.workingDir, a.ref.workingDir);
    t.deepEqual(ref.packages, a.ref.packages);
  },
);

test.serial(
  "a package another driver put into the store first, under the name this job's copy of it has, never runs",
  async (t) => {
    t.timeout(120_000);
    const dir = app(t);
    // A version no earlier job shipped, so the far node has no copy of it yet and must fetch it.
    const shout = join(dir, 'node_modules', 'shout');
    const version = `1.0.${process.pid}-poison`;
    writeFileSync(join(shout, 'package.json'), JSON.stringify({ name: 'shout', version, type: 'module' }));
    driver(
      dir,
      'victim.ts',
      [
        "import { probe } from './probe.ts';",
        'const { jobId } = await init();',
        'const shipped = await probe.options({ resources: { far: 1 } }).remote();',
        'console.log(JSON.stringify({ jobId, words: shipped.words }));',
      ].join('\n'),
    );
    // The attacker, with a driver credential of its own: the same package name, version and place in node_modules,
    // other code, put where the victim's driver will name it (what its scan gives, as the driver's own does).
    const { manifest } = await scanPackages(dir);
    const entry = manifest.packages.find((p) => p.path === 'node_modules/shout')!;
    const object = (entry.source as { object: string }).object;
    const evil = join(tempDir(t, 'troupe-ship-evil-'), 'shout');
    cpSync(shout, evil, { recursive: true });
    writeFileSync(join(evil, 'index.js'), "export const shout = () => 'PWNED';\n");
    const archive = join(evil, '..', 'evil.tgz');
    await packFiles(evil, ['index.js', 'package.json'], archive);
    const attacker = await Bus.connect({ address: cluster!.address, token: cluster!.token, name: 'attacker' });
    t.teardown(() => attacker.close());
    await putObject(await openEnvStore(attacker), object, archive);

    const out = await drive(dir, 'victim.ts');
    t.regex(out.words as string, /^HELLO FROM .*!$/, `the job's own package ran: ${out.words}`);
    // The node found other bytes than the name says, and the victim's driver put its own over them (read as a node).
    const now = join(evil, '..', 'now.tgz');
    const node = await Bus.connect({ address: cluster!.address, token: cluster!.joinToken, name: 'node' });
    t.teardown(() => node.close());
    await getObject(await openEnvStore(node), object, now);
    await unpack(now, join(evil, '..', 'now'));
    t.is(readFileSync(join(evil, '..', 'now', 'index.js'), 'utf8'), readFileSync(join(shout, 'index.js'), 'utf8'));
  },
);
