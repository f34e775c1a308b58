// troupe as a dependency of a project of one's own, as a user gets it: `npm pack` (which builds dist/ through
// `prepare`) once for this file, then a JavaScript project, a strict TypeScript project and a `troupe new` project
// install the tarball and run. The JavaScript files and the tsconfig.json are the README's Install section, verbatim.
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createRequire } from 'node:module';
import { runCommand, processesWithHome, terminate, type RunResult } from '../helpers/cluster.ts';

const root = join(import.meta.dirname, '..', '..');
const own = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  version: string;
  devDependencies: Record<string, string>;
};
const tscBin = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const work = mkdtempSync(join(tmpdir(), 'troupe-package-'));
const homes: string[] = [];

test.after.always(async () => {
  for (const home of homes) {
    // What an embedded cluster killed mid-run would leave in shared memory: its stores are named for its sessions,
    // whose directories its daemons may remove as they go.
    const sessions = readdirSync(home).filter((d) => d.startsWith('session_'));
    await runCommand(process.execPath, [join(root, 'runtime', 'cli', 'troupe.mjs'), 'stop'], {
      env: { TROUPE_HOME: home },
    });
    for (const pid of processesWithHome(home)) await terminate(pid, 1000);
    for (const f of readdirSync('/dev/shm'))
      if (sessions.some((s) => f.includes(s))) rmSync(join('/dev/shm', f), { recursive: true, force: true });
  }
  rmSync(work, { recursive: true, force: true });
});

/** A user's shell: no source condition (ava sets it for this repo), no cluster of the tests, its own TROUPE_HOME. */
function userEnv(home: string): NodeJS.ProcessEnv {
  return { NODE_OPTIONS: '', TROUPE_HOME: home, TROUPE_ADDRESS: '', TROUPE_TOKEN: '' };
}

function newDir(name: string): { dir: string; home: string } {
  const dir = join(work, name);
  const home = join(work, `${name}-home`);
  mkdirSync(dir);
  mkdirSync(home);
  homes.push(home);
  return { dir, home };
}

const show = (r: RunResult) => `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

async function run(
  t: ExecutionContext,
  cmd: string,
  args: string[],
  cwd: string,
  home: string,
  o: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
) {
  const env = { ...userEnv(home), ...o.env };
  const r = await runCommand(cmd, args, { cwd, env, timeoutMs: o.timeoutMs ?? 120_000, group: true });
  t.log(`${[cmd, ...args].join(' ')} in ${cwd}: exit ${r.code ?? r.signal}`);
  return r;
}

// The tests go one at a time: each installs a project and runs a cluster, which two cores do better in turn.
let packed: Promise<string> | undefined;
/** The tarball, made once and shared by the tests of this file. */
function tarball(t: ExecutionContext): Promise<string> {
  packed ??= (async () => {
    const out = join(work, 'pack');
    mkdirSync(out);
    const r = await run(t, 'npm', ['pack', '--pack-destination', out, '--silent'], root, work, { timeoutMs: 240_000 });
    if (r.code !== 0) throw new Error(`npm pack failed: ${show(r)}`);
    return join(out, `troupe-${own.version}.tgz`);
  })();
  return packed;
}

const npmInstall = (t: ExecutionContext, cwd: string, home: string, ...what: string[]) =>
  run(t, 'npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...what], cwd, home, { timeoutMs: 240_000 });

/** The files the README's Install section shows, by the name in their first line (`// main.js`). */
function readmeFiles(): Record<string, string> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(
    readme.indexOf('\n## Install\n'),
    readme.indexOf('\n## ', readme.indexOf('\n## Install\n') + 1),
  );
  const files: Record<string, string> = {};
  for (const m of section.matchAll(/```\w+\n\/\/ ([\w.]+)[^\n]*\n([\s\S]*?)```/g)) files[m[1]] = m[2];
  return files;
}

test.serial(
  'a JavaScript project: npm install the tarball, node main.js runs a task and an actor, exits alone',
  async (t) => {
    t.timeout(600_000);
    const files = readmeFiles();
    t.deepEqual(Object.keys(files).sort(), ['main.js', 'tasks.js', 'tsconfig.json']);
    const { dir, home } = newDir('js-app');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'js-app', private: true, type: 'module' }));
    writeFileSync(join(dir, 'tasks.js'), files['tasks.js']);
    writeFileSync(join(dir, 'main.js'), files['main.js']);
    const install = await npmInstall(t, dir, home, await tarball(t));
    t.is(install.code, 0, show(install));

    const r = await run(t, process.execPath, ['main.js'], dir, home);
    t.is(r.code, 0, show(r)); // no shutdown() in main.js: the driver ends when its script is done
    t.true(r.stdout.includes('[ 1, 4, 9 ]'), show(r));
    t.true(r.stdout.includes('counter: 5'), show(r)); // an actor class made remote without a decorator
    t.deepEqual(processesWithHome(home), [], 'the embedded cluster ended with its driver');
  },
);

test.serial(
  'a strict TypeScript project compiles against the .d.ts; its workers run compiled JS without tsx',
  async (t) => {
    t.timeout(600_000);
    const { dir, home } = newDir('ts-app');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'ts-app', private: true, type: 'module' }));
    writeFileSync(join(dir, 'tsconfig.json'), readmeFiles()['tsconfig.json']);
    writeFileSync(
      join(dir, 'tasks.ts'),
      `import { remote, Actor } from 'troupe';
export const square = remote((x: number) => x * x);
export const flags = remote(() => process.execArgv.join(' '));
@remote({})
export class Counter extends Actor {
  private total = 0;
  add(n: number): number {
    this.total += n;
    return this.total;
  }
}
`,
    );
    writeFileSync(
      join(dir, 'main.ts'),
      `import { init, get, type ObjectRef } from 'troupe';
import { square, flags, Counter } from './tasks.js';
await init();
const refs: ObjectRef<number>[] = [1, 2, 3].map((x) => square.remote(x));
console.log('squares:', await get(refs));
const counter = Counter.remote();
counter.add(2);
console.log('counter:', await counter.add(3));
console.log('worker flags: [' + (await flags.remote()) + ']');
`,
    );
    const install = await npmInstall(
      t,
      dir,
      home,
      await tarball(t),
      `@types/node@${own.devDependencies['@types/node']}`,
    );
    t.is(install.code, 0, show(install));

    const tsc = await run(t, process.execPath, [tscBin, '-p', '.'], dir, home);
    t.is(tsc.code, 0, show(tsc));
    // The README's tsconfig: strict, and neither allowJs nor skipLibCheck, so troupe's declarations are checked too.
    t.notRegex(readmeFiles()['tsconfig.json'], /allowJs|skipLibCheck/);

    const r = await run(t, process.execPath, ['out/main.js'], dir, home);
    t.is(r.code, 0, show(r));
    t.true(r.stdout.includes('squares: [ 1, 4, 9 ]'), show(r));
    t.true(r.stdout.includes('counter: 5'), show(r));
    const workerFlags = /worker flags: \[(.*)\]/.exec(r.stdout)?.[1];
    t.not(workerFlags, undefined, show(r));
    t.false(workerFlags?.includes('tsx'), `a worker of a JavaScript job loaded tsx: ${workerFlags}`);
    t.deepEqual(processesWithHome(home), [], 'the embedded cluster ended with its driver');
  },
);

test.serial(
  'a global install: troupe new writes a project that runs; the global troupe hands over to it',
  async (t) => {
    t.timeout(600_000);
    const tgz = await tarball(t);
    // npm install -g, into a prefix of the test's own instead of the machine's.
    const { dir: global, home } = newDir('global');
    const install = await npmInstall(t, global, home, '--global', '--prefix', global, tgz);
    t.is(install.code, 0, show(install));
    const onPath = { PATH: `${join(global, 'bin')}${delimiter}${process.env.PATH}` };
    const troupe = (cwd: string, ...args: string[]) => run(t, 'troupe', args, cwd, home, { env: onPath });
    const npx = (cwd: string, ...args: string[]) => run(t, 'npx', ['--no-install', 'troupe', ...args], cwd, home);

    const app = join(work, 'my-app');
    const created = await troupe(work, 'new', app, '--troupe', `file:${tgz}`);
    t.is(created.code, 0, show(created));
    const defaulted = await troupe(work, 'new', join(work, 'other-app'));
    t.is(defaulted.code, 0, show(defaulted));
    const otherPkg = JSON.parse(readFileSync(join(work, 'other-app', 'package.json'), 'utf8'));
    const globalRoot = join(global, 'lib', 'node_modules', 'troupe');
    t.is(otherPkg.dependencies.troupe, `file:${globalRoot}`, 'by default, the troupe that ran');
    const refused = await troupe(work, 'new', app);
    t.is(refused.code, 2, show(refused));
    t.regex(refused.stderr, /is not empty/);

    const appInstall = await npmInstall(t, app, home);
    t.is(appInstall.code, 0, show(appInstall));
    const typecheck = await run(t, 'npm', ['run', '-s', 'typecheck'], app, home);
    t.is(typecheck.code, 0, show(typecheck));
    const started = await run(t, 'npm', ['start'], app, home);
    t.is(started.code, 0, show(started)); // main.ts has no shutdown()
    t.true(started.stdout.includes('squares: [ 1, 4, 9 ]'), show(started));
    t.true(started.stdout.includes('counter: 5'), show(started));

    const help = await npx(app, '--help');
    t.is(help.code, 0, show(help));
    t.true(help.stdout.includes('troupe new DIR'));
    // The global troupe, run in the app, hands over to the app's own: the cluster's workers run the troupe the app's
    // modules import. `troupe` is on this PATH, so the line to run on other machines says plain `troupe`.
    const head = await troupe(
      app,
      'start',
      '--head',
      '--host',
      '127.0.0.1',
      '--num-cpus',
      '1',
      '--object-store-dir',
      home,
    );
    t.is(head.code, 0, show(head));
    t.regex(head.stdout, /TROUPE_TOKEN=[\w.]+ troupe start --address 127\.0\.0\.1:\d+/);
    const daemons = processesWithHome(home)
      .map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8'))
      .filter((c) => c.includes('daemon.js'));
    const appDaemon = join(app, 'node_modules', 'troupe', 'dist', 'runtime', 'cluster', 'daemon.js');
    t.is(daemons.length, 2, daemons.join('\n'));
    t.true(
      daemons.every((c) => c.includes(appDaemon)),
      daemons.join('\n'),
    );
    const status = await npx(app, 'status');
    t.is(status.code, 0, show(status));
    t.regex(status.stdout, /node/i);
    const stopped = await npx(app, 'stop');
    t.is(stopped.code, 0, show(stopped));
  },
);
