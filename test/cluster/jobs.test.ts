// Jobs on a cluster that outlives them (as one from `troupe start`): each run of a driver is a job, and its workers
// serve only that job. A run after an edit runs the edited code; the driver may start from any directory of its
// project; modules outside the project are refused.
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startCluster, runCommand, tempDir, eventually, isAlive, type TestCluster } from '../helpers/cluster.ts';
import { Bus } from '../../runtime/bus/bus.ts';
import { subjects } from '../../runtime/protocol/subjects.ts';
import { ProtocolError } from '../../runtime/base/errors.ts';

// Node daemons take back an ended job's workers once its driver has been silent this long (default 10 s).
process.env.TROUPE_CLIENT_TIMEOUT_MS = '3000';

const troupe = pathToFileURL(join(import.meta.dirname, '..', '..', 'runtime', 'index.ts')).href;
const tsx = import.meta.resolve('tsx');

/** The user's remote code, version n: every result says which version ran it. */
const tasksModule = (n: number, withAdded: boolean) => `
import { remote, Actor, get } from '${troupe}';
const V = ${n};
export const version = remote(() => ({ v: V, pid: process.pid }));
export const inner = remote(() => ({ v: V, pid: process.pid }));
export const outer = remote(async () => {
  const nested = await get(inner.remote());
  return { v: V, pid: process.pid, nested };
});
@remote()
export class Versioned extends Actor {
  version() {
    return { v: V, pid: process.pid };
  }
}
/** An actor made by a task: it belongs to the driver's job too. */
export const viaActor = remote(async () => {
  const a = Versioned.remote();
  return await a.version();
});
export const big = remote((size: number) => ({
  data: new Float32Array(size).fill(V),
  node: process.env.TROUPE_NODE_ID,
}));
${withAdded ? 'export const added = remote(() => ({ v: V, pid: process.pid }));' : ''}
`;

/** The driver: runs the scenario named on its command line and prints one RESULT line (or ERROR). */
const mainModule = `
import { existsSync, writeFileSync } from 'node:fs';
import { init, shutdown, get, wait, getActor, kill } from '${troupe}';
import * as t from './tasks.ts';
const has = (flag: string) => process.argv.includes(flag);
await init();
const out: Record<string, unknown> = {};
try {
  if (has('--lineage')) {
    const onB = { schedulingStrategy: { nodeId: process.env.NODE_B!, soft: true } };
    const big = t.big.options(onB).remote(300_000);
    await wait([big]); // no get: that would copy it to this node
    // The test kills node B and says when the head has declared it dead.
    writeFileSync('made', '');
    while (!existsSync('lost')) await new Promise((r) => setTimeout(r, 50));
    const made = await get(big); // lost with node B: its task runs again, on the node left
    out.rebuilt = { v: made.data[0], same: made.data.every((x) => x === made.data[0]), node: made.node };
  } else if (has('--warm-both')) {
    for (const nodeId of process.env.NODES!.split(','))
      out[nodeId] = await get(t.version.options({ schedulingStrategy: { nodeId, soft: false } }).remote());
  } else if (has('--outside')) {
    const lib = await import('../outside/lib.ts');
    out.outside = await lib.elsewhere.remote();
  } else if (has('--keeper-check')) {
    const keeper = await getActor('keeper');
    out.keeper = await keeper.version();
    await kill(keeper);
  } else {
    // First: on a worker that loaded the module before the export was added, this one fails.
    if (has('--added')) out.added = await (t as Record<string, any>).added.remote();
    out.task = await t.version.remote();
    out.nested = await t.outer.remote();
    out.actor = await t.Versioned.remote().version();
    out.shared = await t.Versioned.options({ isolation: 'shared' }).remote().version();
    out.viaActor = await t.viaActor.remote();
    if (has('--keeper')) await t.Versioned.options({ name: 'keeper', lifetime: 'detached' }).remote().version();
  }
  console.log('RESULT ' + JSON.stringify(out));
} catch (e) {
  console.log('ERROR ' + (e as Error).name + ': ' + (e as Error).message);
}
await shutdown();
`;

interface Project {
  dir: string;
  /** Writes version n of the remote code. */
  edit(n: number, withAdded?: boolean): void;
  /** Runs the driver (from `cwd`, default the project) to its end; its RESULT, or the ERROR it printed. */
  run(args?: string[], o?: { cwd?: string; env?: NodeJS.ProcessEnv }): Promise<Record<string, unknown>>;
}

function project(t: ExecutionContext, c: TestCluster): Project {
  const top = tempDir(t, 'troupe-job-');
  const dir = join(top, 'proj');
  mkdirSync(join(dir, 'sub'), { recursive: true });
  mkdirSync(join(top, 'outside'));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'proj', private: true, type: 'module' }));
  writeFileSync(join(dir, 'main.ts'), mainModule);
  writeFileSync(join(top, 'outside', 'package.json'), JSON.stringify({ name: 'other', private: true, type: 'module' }));
  writeFileSync(
    join(top, 'outside', 'lib.ts'),
    `import { remote } from '${troupe}';\nexport const elsewhere = remote(() => 'ran');\n`,
  );
  return {
    dir,
    edit: (n, withAdded = false) => writeFileSync(join(dir, 'tasks.ts'), tasksModule(n, withAdded)),
    run: async (args = [], o = {}) => {
      const cwd = o.cwd ?? dir;
      const r = await runCommand(process.execPath, ['--import', tsx, join(dir, 'main.ts'), ...args], {
        cwd,
        env: { TROUPE_HOME: c.home, ...o.env },
        timeoutMs: 90_000,
      });
      const line = r.stdout.split('\n').find((l) => l.startsWith('RESULT ') || l.startsWith('ERROR '));
      if (!line) throw new Error(`the driver printed no result (code ${r.code}):\n${r.stdout}\n${r.stderr}`);
      return line.startsWith('ERROR ') ? { error: line.slice(6) } : JSON.parse(line.slice(7));
    },
  };
}

type Ran = { v: number; pid: number };

let c: TestCluster | undefined;
test.serial.before(async () => {
  c = await startCluster({ head: { numCpus: 2 } });
});
test.serial.after.always(async () => {
  await c?.stop();
});

test.serial(
  'each run after an edit runs the edited code: tasks, nested tasks, actors (own process, shared, made by a task), ' +
    'an added export',
  async (t) => {
    t.timeout(180_000);
    const p = project(t, c!);
    for (const n of [1, 2]) {
      p.edit(n, n > 1);
      const out = (await p.run(n > 1 ? ['--added'] : [])) as Record<string, Ran & { nested?: Ran }>;
      t.falsy(out.error, `run ${n}`);
      const expected = { task: n, nested: n, actor: n, shared: n, viaActor: n, ...(n > 1 ? { added: n } : {}) };
      t.deepEqual(
        Object.fromEntries(Object.entries(out).map(([k, r]) => [k, r.v])),
        expected,
        `run ${n}: every part ran version ${n}`,
      );
      t.is(out.nested.nested?.v, n, `run ${n}: the nested task ran version ${n}`);
    }
  },
);

test.serial("an ended job's workers go; a detached actor it made keeps its process and code", async (t) => {
  t.timeout(180_000);
  const p = project(t, c!);
  p.edit(1);
  const out = (await p.run(['--keeper'])) as Record<string, Ran & { nested?: Ran }>;
  t.falsy(out.error);
  const pids = new Set([out.task.pid, out.nested.pid, out.nested.nested!.pid, out.viaActor.pid]);
  // They hold the job's modules for nobody once it has ended (TROUPE_CLIENT_TIMEOUT_MS after its driver went quiet).
  await eventually('the ended job to lose its workers', async () => [...pids].every((pid) => !isAlive(pid)), 30_000);
  p.edit(2);
  const kept = (await p.run(['--keeper-check'])) as { keeper?: Ran; error?: string };
  t.falsy(kept.error);
  t.is(kept.keeper?.v, 1, 'the same instance, with the code it loaded');
});

test.serial(
  "the driver runs from a subdirectory of its project; a module outside the project is refused, naming the job's root",
  async (t) => {
    const p = project(t, c!);
    p.edit(7);
    const fromSub = (await p.run([], { cwd: join(p.dir, 'sub') })) as Record<string, Ran>;
    t.falsy(fromSub.error);
    t.is(fromSub.task?.v, 7);
    t.is(fromSub.actor?.v, 7);
    const outside = (await p.run(['--outside'])) as { error?: string };
    t.regex(outside.error ?? '', /refusing to load .*outside[/]lib\.ts: it is outside the job's root .*proj/);
  },
);

test.serial(
  'a lease request whose job is missing or malformed gets ProtocolError from the head and the node',
  async (t) => {
    const bus = await Bus.connect({ address: c!.address, token: c!.headToken, name: 'test-probe' });
    t.teardown(() => bus.close());
    const good = { id: 'job1', driver: 'driver1', root: '/tmp' };
    const bad = [undefined, { ...good, root: 'relative' }, { ...good, id: '../x' }, { ...good, driver: 7 }, 'job1'];
    for (const job of bad) {
      const req = { clientId: 'client1', demand: { CPU: 1 }, job };
      await t.throwsAsync(bus.request(subjects.headLease, { ...req, reqId: 'req1', strategy: 'DEFAULT' }), {
        instanceOf: ProtocolError,
        message: /job|malformed lease request/,
      });
      await t.throwsAsync(bus.request(subjects.nodeLease(c!.nodeIds[0]), req), { instanceOf: ProtocolError });
    }
    const p = project(t, c!);
    p.edit(4);
    t.is(((await p.run()) as Record<string, Ran>).task?.v, 4, 'and they keep serving');
  },
);

test.serial('a lost object made again after an edit is made by the edited code, as the rest of its job', async (t) => {
  t.timeout(180_000);
  const two = await startCluster({ head: { numCpus: 2 }, nodes: [{ numCpus: 2 }], nodeTimeoutMs: 1500 });
  t.teardown(() => two.stop());
  const p = project(t, two);
  const env = { NODES: two.nodeIds.join(','), NODE_B: two.nodeIds[1] };
  p.edit(1);
  const warm = (await p.run(['--warm-both'], { env })) as Record<string, Ran>;
  t.deepEqual(
    two.nodeIds.map((id) => warm[id]?.v),
    [1, 1],
    'version 1 ran on both nodes',
  );
  p.edit(2);
  const running = p.run(['--lineage'], { env });
  await eventually('the object to be made on node B', async () => existsSync(join(p.dir, 'made')), 60_000);
  process.kill(two.nodes[0].pids[0], 'SIGKILL');
  await eventually('node B to be declared dead', async () =>
    (await two.status()).nodes.some((n) => n.nodeId === two.nodeIds[1] && !n.alive),
  );
  writeFileSync(join(p.dir, 'lost'), '');
  t.deepEqual(await running, { rebuilt: { v: 2, same: true, node: two.nodeIds[0] } });
});
